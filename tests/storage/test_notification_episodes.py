"""Each episode is told once (review F13b #6): the record of what was told is kept apart from
the events, so retention deleting dispatched events (or the outbox bound dropping them) never
makes an ongoing episode be told again; the record goes when the episode ends."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import Database, insert_host
from storage.notifications import (
    NotificationSettings,
    drop_excess_events,
    enqueue_event,
    record_due_events,
)

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
SETTINGS = NotificationSettings(unreachable_minutes=30)


def _unreachable_host(conn: psycopg.Connection[Any]) -> int:
    host = insert_host(conn, name="web-1", address=None, groups=[]).id
    conn.execute(
        "UPDATE hosts SET health = 'unreachable', health_changed_at = %s WHERE id = %s",
        (NOW - dt.timedelta(days=40), host),
    )
    return host


def _forget_events(conn: psycopg.Connection[Any]) -> None:
    """What retention does to dispatched events after 30 days."""
    conn.execute("UPDATE notification_events SET dispatched_at = %s", (NOW,))
    conn.execute("DELETE FROM notification_events")


async def test_a_host_down_for_weeks_is_told_once_even_after_its_event_is_pruned(
    db: Database,
) -> None:
    host = await db.run(_unreachable_host)
    assert await db.run(record_due_events, SETTINGS, NOW) == 1
    await db.run(_forget_events)
    assert await db.run(record_due_events, SETTINGS, NOW + dt.timedelta(days=1)) == 0
    # The outbox bound dropping dispatched events does not re-tell it either.
    await db.run(drop_excess_events, 0)
    assert await db.run(record_due_events, SETTINGS, NOW + dt.timedelta(days=2)) == 0
    # It recovers (the episode ends) and goes down again: a new episode, told once.
    await db.run(lambda c: c.execute(
        "UPDATE hosts SET health = 'healthy', health_changed_at = %s WHERE id = %s",
        (NOW + dt.timedelta(days=3), host),
    ))  # fmt: skip
    assert await db.run(record_due_events, SETTINGS, NOW + dt.timedelta(days=3)) == 0
    told = await db.run(lambda c: c.execute("SELECT count(*) FROM notification_told").fetchone()[0])
    assert told == 0  # the ended episode's record is gone
    await db.run(lambda c: c.execute(
        "UPDATE hosts SET health = 'unreachable', health_changed_at = %s WHERE id = %s",
        (NOW + dt.timedelta(days=4), host),
    ))  # fmt: skip
    assert await db.run(record_due_events, SETTINGS, NOW + dt.timedelta(days=5)) == 1


async def test_an_event_with_a_dedupe_key_is_enqueued_once_even_after_it_is_pruned(
    db: Database,
) -> None:
    key = "window:1:2026-11-30T13:00:00+00:00"
    assert await db.run(enqueue_event, "window_reminder", [], {}, key)
    await db.run(_forget_events)
    assert not await db.run(enqueue_event, "window_reminder", [], {}, key)
