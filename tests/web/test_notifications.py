"""Notification settings, the test message, the outbox, subscriptions and the run-time log
level through the JSON API (a real aiosmtpd server on loopback; audited changes)."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from actors.notifier import Notifier
from ca import Sealer
from storage.audit import AuditFilter, list_entries
from storage.notifications import enqueue_event, get_notification_settings
from storage.outbox import (
    NewMessage,
    mark_attempt_failed,
    mark_sent,
    queue_messages,
    recent_messages,
)

from ..actors.smtp_server import hung_server, smtp_server
from ..conftest import Pki
from .conftest import WebRig, assert_envelope

pytestmark = pytest.mark.timeout(60)
SETTINGS = "/api/v1/admin/notifications"
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def install_sender(rig: WebRig, pki: Pki) -> Notifier:
    context = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
    sender = Notifier(rig.db, sealer=Sealer(secrets.token_bytes(32)), ssl_context=context)
    rig.app.state.notifier = sender
    return sender


async def audit_actions(rig: WebRig, prefix: str) -> list[tuple[str, str, str]]:
    entries, _ = await rig.db.run(list_entries, AuditFilter(action=prefix))
    return [(e.actor, e.action, e.outcome) for e in entries]


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


async def test_notifications_are_off_by_default_and_no_password_is_stored(
    client: httpx2.AsyncClient,
) -> None:
    got = (await client.get(SETTINGS)).json()
    assert (got["enabled"], got["password_stored"], got["smtp_host"]) == (False, False, "")
    assert "password" not in got and "password_sealed" not in got


async def test_saving_settings_seals_the_password_never_returns_it_and_is_audited(
    client: httpx2.AsyncClient, web_rig: WebRig, pki: Pki
) -> None:
    sender = install_sender(web_rig, pki)
    answer = await client.put(SETTINGS, json={
        "enabled": True, "smtp_host": "smtp.example.test", "smtp_port": 587,
        "security": "starttls", "username": "pm", "password": "hunter2-secret",
        "from_address": "pm@example.test",
    })  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["password_stored"] is True
    assert "hunter2" not in answer.text
    stored = await web_rig.db.run(get_notification_settings)
    assert stored.password_sealed and "hunter2" not in stored.password_sealed
    assert sender.sealer is not None
    assert sender.sealer.unseal(stored.password_sealed) == "hunter2-secret"
    assert await audit_actions(web_rig, "settings.notifications") == [
        ("user:admin", "settings.notifications", "ok")
    ]
    entries, _ = await web_rig.db.run(list_entries, AuditFilter(action="settings.notifications"))
    assert "hunter2" not in repr(entries[0])
    # Saving again without a password keeps the stored one.
    again = await client.put(SETTINGS, json={
        "enabled": True, "smtp_host": "smtp.example.test", "security": "starttls",
        "username": "pm", "from_address": "pm@example.test",
    })  # fmt: skip
    assert again.json()["password_stored"] is True


async def test_plain_smtp_off_loopback_and_bad_addresses_are_refused_with_their_fields(
    client: httpx2.AsyncClient,
) -> None:
    answer = await client.put(SETTINGS, json={
        "enabled": True, "smtp_host": "192.0.2.10", "security": "none",
        "from_address": "not-an-address", "password_env": "lower case",
    })  # fmt: skip
    body = assert_envelope(answer, 422)
    assert set(body["details"]["fields"]) == {"security", "from_address", "password_env"}
    assert (await client.get(SETTINGS)).json()["enabled"] is False


async def test_the_test_message_arrives_at_a_real_smtp_server(
    client: httpx2.AsyncClient, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    install_sender(web_rig, pki)
    with smtp_server(pki, tmp_path) as server:
        saved = await client.put(SETTINGS, json={
            "smtp_host": "127.0.0.1", "smtp_port": server.port, "security": "none",
            "from_address": "pm@example.test",
        })  # fmt: skip
        assert saved.status_code == 200, saved.text
        answer = await client.post(f"{SETTINGS}/test", json={"to": "ops@example.test"})
    assert answer.json() == {"ok": True, "result": f"sent to ops@example.test through "
                                                   f"127.0.0.1:{server.port}"}  # fmt: skip
    [mail] = server.recorder.messages
    assert (mail["To"], mail["Subject"]) == ("ops@example.test", "[patch-manager] test message")
    assert await audit_actions(web_rig, "settings.notifications.test") == [
        ("user:admin", "settings.notifications.test", "ok")
    ]


async def test_the_test_message_to_a_hung_server_says_it_timed_out_and_shows_in_the_outbox(
    client: httpx2.AsyncClient, web_rig: WebRig, pki: Pki
) -> None:
    install_sender(web_rig, pki)
    with hung_server() as port:
        await client.put(SETTINGS, json={
            "smtp_host": "127.0.0.1", "smtp_port": port, "security": "none",
            "from_address": "pm@example.test", "timeout_s": 1,
        })  # fmt: skip
        answer = await client.post(f"{SETTINGS}/test", json={"to": "ops@example.test"})
    assert answer.json() == {"ok": False, "result": "timeout: no answer within 1 s"}
    outbox = (await client.get(f"{SETTINGS}/outbox")).json()
    assert outbox["last_error"] == "timeout: no answer within 1 s"
    assert (outbox["pending_messages"], outbox["recent"]) == (0, [])


async def test_the_test_message_without_a_running_sender_says_so(
    client: httpx2.AsyncClient,
) -> None:
    answer = await client.post(f"{SETTINGS}/test", json={"to": "ops@example.test"})
    assert answer.json() == {"ok": False, "result": "the notification sender is not running"}


async def test_a_user_sets_their_own_address_and_events(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    mine = "/api/v1/profile/notifications"
    assert (await client.get(mine)).json() == {"email": "", "events": []}
    answer = await client.put(
        mine, json={"email": "me@example.test", "events": ["job_failed", "host_unreachable"]}
    )
    assert answer.json() == {"email": "me@example.test",
                             "events": ["job_failed", "host_unreachable"]}  # fmt: skip
    assert (await client.get(mine)).json()["email"] == "me@example.test"
    assert_envelope(await client.put(mine, json={"email": "x", "events": []}), 422)
    assert_envelope(await client.put(mine, json={"email": "", "events": ["gossip"]}), 422)
    assert await audit_actions(web_rig, "notifications.subscribe") == [
        ("user:admin", "notifications.subscribe", "ok")
    ]


async def test_the_log_level_changes_at_run_time_and_is_audited(
    client: httpx2.AsyncClient, web_rig: WebRig, root_level: None
) -> None:
    answer = await client.put("/api/v1/admin/log-level", json={"level": "debug"})
    assert answer.json() == {"level": "debug"}
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    assert_envelope(await client.put("/api/v1/admin/log-level", json={"level": "loud"}), 422)
    assert await audit_actions(web_rig, "settings.log_level") == [
        ("user:admin", "settings.log_level", "ok")
    ]


async def test_metrics_show_the_outbox_depth_and_sent_and_failed_messages(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    def fill(conn: Any) -> None:
        enqueue_event(conn, "host_unreachable", [], {"host": "h"})
        queue_messages(conn, [NewMessage("a@example.test", "s", "b")] * 3, [], NOW)
        ids = [m.id for m in recent_messages(conn)]
        mark_sent(conn, ids[:1])
        mark_attempt_failed(conn, ids[1:2], "refused: connection refused", None)

    await web_rig.db.run(fill)
    text = (await client.get("/metrics")).text
    for line in (
        'patchmgr_notification_outbox_depth{queue="events"} 1',
        'patchmgr_notification_outbox_depth{queue="messages"} 1',
        'patchmgr_notification_messages{state="sent"} 1',
        'patchmgr_notification_messages{state="failed"} 1',
        'patchmgr_notification_dropped_total{queue="events"} 0',
    ):
        assert line in text.splitlines()
