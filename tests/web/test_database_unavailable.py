"""A database that cannot answer (here: an audited write whose wait for the chain's lock is
cancelled by the server) is a 503 with Retry-After, never a 500 (review F13b #1)."""

from __future__ import annotations

from typing import Any

import httpx2
import psycopg
import pytest
import trio

from storage.audit import _LOCK_ID

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(60)

# Holding the chain's lock, wait (server side) for an audited write to queue behind it, then
# cancel that write's statement: its transaction fails with an OperationalError.
CANCEL_THE_WAITER = """
DO $$ DECLARE p int; BEGIN
  LOOP
    SELECT pid INTO p FROM pg_locks WHERE locktype = 'advisory' AND NOT granted LIMIT 1;
    EXIT WHEN p IS NOT NULL;
    PERFORM pg_sleep(0.01);
  END LOOP;
  PERFORM pg_cancel_backend(p);
END $$
"""


def _hold_and_cancel(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(CANCEL_THE_WAITER)


async def _while_cancelled(web_rig: WebRig, request: Any) -> httpx2.Response:
    answers: list[httpx2.Response] = []

    async def send() -> None:
        answers.append(await request())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(web_rig.db.run, _hold_and_cancel)
        nursery.start_soon(send)
    return answers[0]


async def test_an_api_write_the_database_cannot_finish_is_503_with_retry_after(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    answer = await _while_cancelled(web_rig, lambda: client.put(
        "/api/v1/profile/notifications", json={"email": "me@example.test", "events": []}
    ))  # fmt: skip
    body = assert_envelope(answer, 503, "unavailable")
    assert "database" in body["message"]
    assert int(answer.headers["retry-after"]) > 0


async def test_a_page_post_the_database_cannot_finish_is_a_503_error_page(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    page = await client.get("/notifications")
    csrf = form_token(page.text)
    answer = await _while_cancelled(web_rig, lambda: client.post(
        "/notifications/subscription",
        data={"csrf_token": csrf, "email": "me@example.test", "events": ["job_failed"]},
    ))  # fmt: skip
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")
    assert "database is not reachable" in answer.text
    assert int(answer.headers["retry-after"]) > 0


CANCEL_A_SESSIONS_READER = """
DO $$ DECLARE p int; BEGIN
  LOOP
    SELECT l.pid INTO p FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
      WHERE c.relname = 'sessions' AND NOT l.granted LIMIT 1;
    EXIT WHEN p IS NOT NULL;
    PERFORM pg_sleep(0.01);
  END LOOP;
  PERFORM pg_cancel_backend(p);
END $$
"""


def _lock_sessions_and_cancel(
    conn: psycopg.Connection[Any], locked: trio.Event, token: trio.lowlevel.TrioToken
) -> None:
    with conn.transaction():
        conn.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        trio.from_thread.run_sync(locked.set, trio_token=token)
        conn.execute(CANCEL_A_SESSIONS_READER)


async def test_a_session_lookup_the_database_cannot_answer_is_503_not_500(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    locked = trio.Event()
    answers: list[httpx2.Response] = []

    async def send() -> None:
        await locked.wait()
        answers.append(await client.get("/api/v1/hosts"))

    async with trio.open_nursery() as nursery:
        token = trio.lowlevel.current_trio_token()
        nursery.start_soon(web_rig.db.run, _lock_sessions_and_cancel, locked, token)
        nursery.start_soon(send)
    assert_envelope(answers[0], 503, "unavailable")
    assert int(answers[0].headers["retry-after"]) > 0
