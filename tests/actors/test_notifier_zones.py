"""Notification e-mails name times in the recipient's time zone (their profile's), with the zone
named and UTC beside it, not raw ISO UTC (review rvA, point 4)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from actors.notifier import describe
from storage import Database, list_groups, save_window
from storage.display import set_user_time_zone
from storage.notifications import EventRow

from ..conftest import Pki
from .smtp_server import smtp_server
from .test_notifier import NOW, add_host, configure, notifier, plain, subscribe

pytestmark = pytest.mark.timeout(60)


def event(kind: str, **details: Any) -> EventRow:
    return EventRow(1, kind, (7,), details, NOW)


def test_an_unreachable_hosts_since_reads_in_the_recipients_zone_with_utc_beside_it() -> None:
    text = describe(
        event("host_unreachable", host="web-1", since="2026-11-30T06:40:00+00:00", reason="x"),
        {7},
        "Asia/Kolkata",
    )
    assert "unreachable since 2026-11-30 12:10 Asia/Kolkata (06:40 UTC)" in text


def test_a_certificates_expiry_reads_in_the_recipients_zone() -> None:
    text = describe(
        event("certificate_expiry", subject="CN=web-1", not_after="2026-12-24T23:30:00+00:00"),
        {7},
        "Europe/Berlin",
    )
    assert "expires 2026-12-25 00:30 Europe/Berlin (2026-12-24 23:30 UTC)" in text


def test_a_recipient_in_utc_reads_utc_named_once() -> None:
    text = describe(
        event("window_reminder", name="n", target="all", starts_at=NOW.isoformat()), {7}
    )
    assert text.endswith("starts 2026-11-30 12:00 UTC")


async def test_a_window_reminder_mail_names_the_start_in_the_recipients_zone(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    await add_host(db, "web-1", ("web",))

    def window(conn: Any) -> None:
        group = next(g.id for g in list_groups(conn) if g.name == "web")
        save_window(conn, {
            "name": "nightly", "group_id": group, "recurrence": "daily",
            "start_date": NOW.date(), "start_time": dt.time(12, 45), "duration_minutes": 60,
            "timezone": "UTC", "weekdays": [], "enabled": True,
        }, None, "test")  # fmt: skip

    await db.run(window)
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port, reminder_minutes=60))
        user_id = await subscribe(db, "web-op", "operator", ("web",), events=("window_reminder",))
        await db.run(set_user_time_zone, user_id, "Asia/Kolkata")
        assert await notifier(db).cycle() == 1
    [mail] = server.recorder.messages
    assert "starts 2026-11-30 18:15 Asia/Kolkata (12:45 UTC)" in mail.get_payload()
