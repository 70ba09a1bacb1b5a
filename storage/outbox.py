"""The outbox of e-mail messages: digests waiting to be sent, retried with backoff, then marked
sent or failed (R-9.3). Bounded: ``drop_excess_messages`` keeps the newest ``keep`` and counts
the pending ones it drops.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class NewMessage:
    recipient: str
    subject: str
    body: str
    events: int = 1


@dataclass(frozen=True)
class MessageRow:
    id: int
    recipient: str
    subject: str
    body: str
    events: int
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


_COLUMNS = (
    "id, recipient, subject, body, events, state, attempts, next_attempt_at, last_error,"
    " created_at, sent_at"
)


def queue_messages(
    conn: psycopg.Connection[Any],
    messages: Sequence[NewMessage],
    event_ids: Sequence[int],
    due_at: dt.datetime,
) -> None:
    """Insert ``messages`` (due from ``due_at``, the sender's clock) and mark ``event_ids``
    dispatched, in one transaction."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO notification_messages (recipient, subject, body, events,"
                " next_attempt_at) VALUES (%s, %s, %s, %s, %s)",
                [(m.recipient, m.subject, m.body, m.events, due_at) for m in messages],
            )
        conn.execute(
            "UPDATE notification_events SET dispatched_at = now() WHERE id = ANY(%s)",
            (list(event_ids),),
        )


def due_messages(
    conn: psycopg.Connection[Any], now: dt.datetime, limit: int = 100
) -> list[MessageRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_messages"
        " WHERE state = 'pending' AND next_attempt_at <= %s ORDER BY id LIMIT %s",
        (now, limit),
    ).fetchall()
    return [MessageRow(*row) for row in rows]


def next_due(conn: psycopg.Connection[Any]) -> dt.datetime | None:
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM notification_messages WHERE state = 'pending'"
    ).fetchone()
    return row[0] if row else None


def mark_sent(conn: psycopg.Connection[Any], message_ids: Sequence[int]) -> None:
    conn.execute(
        "UPDATE notification_messages SET state = 'sent', sent_at = now(),"
        " attempts = attempts + 1, last_error = '' WHERE id = ANY(%s)",
        (list(message_ids),),
    )


def mark_attempt_failed(
    conn: psycopg.Connection[Any],
    message_ids: Sequence[int],
    error: str,
    retry_at: dt.datetime | None,
) -> None:
    """Record a failed attempt: pending again from ``retry_at``, or failed for good when it is
    None. The error is also the outbox's last error."""
    with conn.transaction():
        conn.execute(
            "UPDATE notification_messages SET attempts = attempts + 1, last_error = %s,"
            " state = CASE WHEN %s::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,"
            " next_attempt_at = coalesce(%s::timestamptz, next_attempt_at)"
            " WHERE id = ANY(%s)",
            (error, retry_at, retry_at, list(message_ids)),
        )
        record_error(conn, error)


def record_error(conn: psycopg.Connection[Any], error: str) -> None:
    conn.execute(
        "UPDATE notification_settings SET last_error = %s, last_error_at = now() WHERE id = 1",
        (error,),
    )


def recent_messages(conn: psycopg.Connection[Any], limit: int = 20) -> list[MessageRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_messages ORDER BY id DESC LIMIT %s", (limit,)
    ).fetchall()
    return [MessageRow(*row) for row in rows]


@dataclass(frozen=True)
class OutboxStats:
    """The outbox as the UI and /metrics show it."""

    pending_events: int
    pending_messages: int
    sent: int
    failed: int
    dropped_events: int
    dropped_messages: int
    last_error: str
    last_error_at: dt.datetime | None


def outbox_stats(conn: psycopg.Connection[Any]) -> OutboxStats:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM notification_events WHERE dispatched_at IS NULL),"
        " count(*) FILTER (WHERE m.state = 'pending'), count(*) FILTER (WHERE m.state = 'sent'),"
        " count(*) FILTER (WHERE m.state = 'failed'),"
        " s.dropped_events, s.dropped_messages, s.last_error, s.last_error_at"
        " FROM notification_settings s LEFT JOIN notification_messages m ON TRUE"
        " WHERE s.id = 1 GROUP BY s.id"
    ).fetchone()
    assert row is not None  # migration 0012 inserts the one settings row
    return OutboxStats(*row)


def drop_excess_messages(conn: psycopg.Connection[Any], keep: int) -> int:
    """Keep the newest ``keep`` messages; count the pending ones dropped."""
    with conn.transaction():
        rows = conn.execute(
            "DELETE FROM notification_messages WHERE id IN (SELECT id FROM notification_messages"
            " ORDER BY id DESC OFFSET %s) RETURNING state",
            (keep,),
        ).fetchall()
        dropped = sum(1 for (state,) in rows if state == "pending")
        if dropped:
            conn.execute(
                "UPDATE notification_settings SET dropped_messages = dropped_messages + %s"
                " WHERE id = 1",
                (dropped,),
            )
    return dropped
