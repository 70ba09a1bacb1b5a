"""The notification sender: review F13b findings (#3: a stored password_env naming another of
the process's secrets is never read nor sent; #7: window reminders respect blackouts)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio

from storage import Database, list_groups, save_window
from storage.jobs import create_blackout
from storage.notifications import pending_events

from .test_notifier import NOW, add_host, configure, notifier, plain


async def test_a_stored_password_env_outside_pm_smtp_is_refused_and_never_read(
    db: Database,
) -> None:
    # Stored before the rule existed (or written past the web layer): the sender refuses it.
    await configure(db, plain(2525, username="pm", password_env="PM_AUDIT_KEY"))
    read: list[str] = []

    def environ(name: str) -> str | None:
        read.append(name)
        return "the-audit-key"

    ok, result = await notifier(db, environ=environ).send_test("alice@example.test")
    assert not ok
    assert result.startswith("config: password_env 'PM_AUDIT_KEY'")
    assert read == []


def _window_at_12_45(conn: Any) -> None:
    group = next(g.id for g in list_groups(conn) if g.name == "web")
    save_window(conn, {
        "name": "nightly", "group_id": group, "recurrence": "daily",
        "start_date": NOW.date(), "start_time": dt.time(12, 45), "duration_minutes": 60,
        "timezone": "UTC", "weekdays": [], "enabled": True,
    }, None, "test")  # fmt: skip


@pytest.mark.parametrize(
    ("blackout", "starts"),
    [
        ((dt.time(12, 0), dt.time(14, 0)), []),  # the whole occurrence blacked out: no reminder
        ((dt.time(12, 30), dt.time(13, 0)), ["2026-11-30T13:00:00+00:00"]),  # opens at 13:00
    ],
)
async def test_window_reminders_tell_only_what_blackouts_leave_of_an_occurrence(
    db: Database, blackout: tuple[dt.time, dt.time], starts: list[str]
) -> None:
    await add_host(db, "web-1", ("web",))
    await db.run(_window_at_12_45)
    begin, end = (dt.datetime.combine(NOW.date(), t, dt.UTC) for t in blackout)
    await db.run(create_blackout, "freeze", begin, end)
    await configure(db, plain(2525, reminder_minutes=60))
    await notifier(db).remind(plain(2525, reminder_minutes=60), NOW)
    events = await db.run(pending_events)
    assert [e.details["starts_at"] for e in events if e.kind == "window_reminder"] == starts


async def test_a_wake_during_a_cycle_starts_the_next_cycle_at_once(db: Database) -> None:
    sender = notifier(db, every_s=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        assert sender.stats.cycles == 1  # the first cycle is under way (reading the settings)
        sender.wake()  # e.g. the settings saved meanwhile
        with trio.fail_after(10):  # not the hour until the next timed cycle
            while sender.stats.cycles < 2:
                await sender.cycled.wait()
        nursery.cancel_scope.cancel()
