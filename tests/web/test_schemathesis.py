"""Schemathesis against the live app: real Hypercorn over TLS, a logged-in session, the CSRF
header on unsafe methods, and a real API token of the admin's (``operate``): the document's
``bearer`` scheme makes schemathesis send an ``Authorization`` header, which outranks the
cookie, so without a real token most operations were only ever answered 401. With it, the
operations a token reaches are exercised (jobs, plans, deploy previews, windows, waivers, host
refreshes). The admin's own operations (users, groups, settings, audit...), which no token
scope reaches, run in a second pass with the session alone.
Fixed seed, bounded examples per operation. 0 server errors and 0 responses that break the
app's own OpenAPI document.

Operations that would make the manager talk to addresses schemathesis invents (registering a
host by any name, which resolves DNS and polls it; discovery scans; registering found agents)
are left out: no test may send traffic outside 127.0.0.0/8. Hosts for the other operations are
put in the database on loopback addresses nothing listens on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import httpx2
import pytest
import trio

from storage import insert_host
from web import WebListener, serve_web

from ..conftest import Pki
from .conftest import WebRig, login
from .test_relay import browser_context

pytestmark = pytest.mark.timeout(120)

# Fixed for CI; PM_SCHEMATHESIS_SEED / _EXAMPLES explore further by hand.
SEED = int(os.environ.get("PM_SCHEMATHESIS_SEED", "20261130"))
EXAMPLES = int(os.environ.get("PM_SCHEMATHESIS_EXAMPLES", "25"))
OFF_LIMITS: tuple[str, ...] = ("post_hosts", "post_discovery", "post_discovery_scan_id_register")
# Operations that can end the run's own session (the admin is user 1, an id the generator tries
# first): after one of them every later request is a 401 and tests nothing. tests/web's user
# tests cover them.
SESSION_ENDING: tuple[str, ...] = (
    "patch_users_user_id",
    "post_users_user_id_reset_password",
    "post_users_user_id_reset_mfa",
    "delete_users_user_id_sessions",
    "delete_users_user_id_sessions_session_id",
    "post_profile_password",
)
# /api/v1/health answers 503 by design when the scheduler's heartbeat is late, which a loaded
# CI machine can cause at any moment; it has its own tests.
NOT_HERE = ("get_health",)
# The admin's own operations (no token scope reaches them): run with the session.
ADMIN_PATHS = (
    "^/api/v1/(users|groups|admin|audit|certificates|enrolments|repo-configs|discovery|blackouts)"
)


async def logged_in(base: str, rig: WebRig, pki: Pki) -> tuple[str, str]:
    """A session cookie and its CSRF token, through the login form."""
    async with httpx2.AsyncClient(verify=browser_context(pki), base_url=base) as http:
        csrf = await login(http, rig.password)
        return str(http.cookies["pm_session"]), csrf


async def api_token(base: str, pki: Pki, cookie: str, csrf: str) -> str:
    """A real API token of the admin's (``operate``, the widest scope a token has)."""
    async with httpx2.AsyncClient(
        verify=browser_context(pki),
        base_url=base,
        headers={"cookie": f"pm_session={cookie}", "x-csrf-token": csrf},
    ) as http:
        created = await http.post("/api/v1/tokens", json={"name": "st", "scope": "operate"})
        assert created.status_code == 201, created.text
        token = str(created.json()["token"])
        assert token.startswith("pm_")
        return token


async def seed(base: str, pki: Pki, cookie: str, csrf: str) -> None:
    """A group, a window, a blackout and a job, so that list operations answer with data
    (and their replies are checked against the document too)."""
    async with httpx2.AsyncClient(
        verify=browser_context(pki),
        base_url=base,
        headers={"cookie": f"pm_session={cookie}", "x-csrf-token": csrf},
    ) as http:
        host_id = (await http.get("/api/v1/hosts")).json()["hosts"][0]["id"]
        created = [
            await http.post("/api/v1/groups", json={"name": "seeded"}),
            await http.post(
                "/api/v1/windows",
                json={"name": "nightly", "host_id": host_id, "recurrence": "daily"},
            ),
            await http.post(
                "/api/v1/blackouts",
                json={
                    "name": "freeze",
                    "starts_at": "2030-12-20T00:00:00",
                    "ends_at": "2031-01-02T00:00:00",
                },
            ),  # fmt: skip
            await http.post("/api/v1/jobs", json={"host_ids": [host_id], "kind": "patch"}),
        ]
        assert [r.status_code for r in created] == [201] * 4, [r.text for r in created]
        for path in ("groups", "windows", "blackouts", "jobs"):
            listed = (await http.get(f"/api/v1/{path}")).json()[path]
            assert listed, path


async def test_live_api_has_no_server_errors_and_keeps_its_schema(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    for n in range(3):
        await web_rig.db.run(
            lambda conn, n=n: insert_host(
                conn, name=f"h{n}.example.test", address=f"127.108.251.{n + 1}",
                display_name=f"host_{n}", groups=["web"],
            )
        )  # fmt: skip
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path)
    urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    base = urls[0]
    cookie, csrf = await logged_in(base, web_rig, pki)
    await seed(base, pki, cookie, csrf)
    token = await api_token(base, pki, cookie, csrf)
    session = [f"--header=Cookie: pm_session={cookie}", f"--header=X-CSRF-Token: {csrf}"]
    excluded = [f"--exclude-operation-id={n}" for n in OFF_LIMITS + SESSION_ENDING + NOT_HERE]
    with trio.fail_after(110):
        # What a token reaches, with the token; the admin's own operations with the session
        # (an Authorization header of another scheme, not ours, keeps schemathesis from
        # inventing a bearer one that would outrank the cookie).
        by_token = await schemathesis(
            base, pki, tmp_path / "token",
            [*session, f"--header=Authorization: Bearer {token}",
             f"--exclude-path-regex={ADMIN_PATHS}", *excluded],
        )  # fmt: skip
        by_session = await schemathesis(
            base, pki, tmp_path / "session",
            [*session, "--header=Authorization: Basic cHJveHk6cHJveHk=",
             f"--include-path-regex={ADMIN_PATHS}", *excluded],
        )  # fmt: skip
    stop.set()
    # The credentials opened the operations: they were exercised, not refused as
    # unauthenticated.
    for statuses, expected in [
        (by_token, [("POST /jobs", 201), ("POST /jobs/plan", 200),
                    ("POST /deploy/preview", 200), ("GET /waivers", 200)]),
        (by_session, [("GET /users", 200), ("POST /groups", 201),
                      ("GET /admin/notifications", 200), ("GET /audit", 200)]),
    ]:  # fmt: skip
        for operation, success in expected:
            assert statuses[operation][success] > 0, (operation, dict(statuses[operation]))
            assert not statuses[operation][401], (operation, dict(statuses[operation]))


async def schemathesis(
    base: str, pki: Pki, report_dir: Path, options: list[str]
) -> dict[str, Counter[int]]:
    """One schemathesis run; 0 server errors and 0 schema violations; the statuses seen."""
    report_dir.mkdir()
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks=not_a_server_error,response_schema_conformance",
        f"--seed={SEED}",
        f"--max-examples={EXAMPLES}",
        "--generation-database=none",
        "--no-shrink",
        "--workers=1",
        "--phases=examples,coverage,fuzzing",
        f"--tls-verify={pki.ca.root_cert_path}",
        "--request-timeout=10",
        "--no-color",
        "--report=junit,har",
        f"--report-dir={report_dir}",
        *options,
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    result = await trio.run_process(
        command,
        capture_stdout=True,
        stderr=subprocess.STDOUT,
        check=False,
        env=env,
        cwd=report_dir,  # its crash cache (.schemathesis/) stays out of the checkout
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output[-6000:]
    assert "Server error" not in output
    return answered(report_dir)


def answered(report_dir: Path) -> dict[str, Counter[int]]:
    """Status codes per operation (``METHOD /path`` under /api/v1) from schemathesis's HAR
    report; a path segment with a digit counts as the id parameter."""
    har = next(p for p in report_dir.rglob("*") if "har" in p.name and p.is_file())
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = entry["request"]["url"].split("/api/v1", 1)[-1].split("?", 1)[0]
        path = re.sub(r"/[^/]*\d[^/]*", "/{id}", path)
        statuses[f"{entry['request']['method']} {path}"][entry["response"]["status"]] += 1
    return statuses


def schema_nodes(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in schema_nodes(value))]
    if isinstance(node, list):
        return [n for value in node for n in schema_nodes(value)]
    return []


async def test_times_of_day_are_documented_by_a_pattern_that_served_windows_match(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    """``format: time`` means an RFC 3339 time with an offset; a window's start time has none."""
    await web_rig.db.run(
        lambda conn: insert_host(conn, name="w.example.test", address="127.108.251.9")
    )
    host_id = (await client.get("/api/v1/hosts")).json()["hosts"][0]["id"]
    created = await client.post(
        "/api/v1/windows",
        json={"name": "nightly", "host_id": host_id, "start_time": "02:30", "recurrence": "daily"},
    )
    assert created.status_code == 201, created.text
    document = (await client.get("/api/v1/openapi.json")).json()
    nodes = schema_nodes(document)
    assert not [n for n in nodes if n.get("format") == "time"]
    window = document["components"]["schemas"]["WindowRow"]["properties"]["start_time"]
    served = (await client.get("/api/v1/windows")).json()["windows"][0]["start_time"]
    assert served == "02:30:00"
    assert re.fullmatch(str(window["pattern"]), served)


async def test_the_429_answer_documents_its_retry_after_header(client: httpx2.AsyncClient) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    header = document["components"]["responses"]["E429"]["headers"]["Retry-After"]
    assert header["schema"]["type"] == "integer"
