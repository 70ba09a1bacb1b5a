"""Notification settings, per-user subscriptions and the events waiting to be told (R-9.3).

An event is a row in ``notification_events``: a job's end inserts one from a trigger in the same
transaction as the job's final state (migration 0012); the periodic checks (a host unreachable
for long, a certificate about to expire, a window about to start) insert theirs with a dedupe
key recorded in ``notification_told`` (migration 0018) until the episode ends, so each episode
is told once even after retention or the outbox bound deleted its event. Subscribers are read
with the scope their role gives them (``role_scope``: admins every host; operators and auditors
their groups; operators also ungrouped hosts when ``auth.operators_see_ungrouped``), and
``visible_hosts`` filters an event's hosts by that scope with ``scope_condition``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .scope import HostScope, role_scope, scope_condition

EVENT_KINDS = (
    "job_finished",
    "job_failed",
    "host_unreachable",
    "certificate_expiry",
    "window_reminder",
)
SECURITIES = ("starttls", "tls", "none")
# The one rule for ``password_env``: a variable of this prefix only, so that a settings change
# can never make the sender put another secret the process holds (PM_AUDIT_KEY,
# PM_SEALING_KEY, PM_OIDC_CLIENT_SECRET, the database URL ...) into SMTP AUTH.
PASSWORD_ENV_PREFIX = "PM_SMTP_"
_ENV_NAME = re.compile(r"PM_SMTP_[A-Z0-9_]{1,56}")
# The one rule for an e-mail address (subscriptions, from-address, the test message's "to").
MAX_ADDRESS = 254
_ADDRESS = re.compile(r"[^@\s<>\x00-\x1f\x7f]+@[^@\s<>\x00-\x1f\x7f]+\.[^@\s<>\x00-\x1f\x7f]+")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only SMTP servers reached without TLS
    (the one rule, checked when settings are saved and again before each send)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def password_env_problem(name: str) -> str | None:
    """Why ``name`` cannot be the SMTP password's variable (None: it can)."""
    if _ENV_NAME.fullmatch(name):
        return None
    return f"a variable named {PASSWORD_ENV_PREFIX}NAME (A-Z, 0-9, _), e.g. PM_SMTP_PASSWORD"


def address_problem(address: str) -> str | None:
    """Why ``address`` is no e-mail address we send to (None: it is one)."""
    if len(address) > MAX_ADDRESS:
        return f"at most {MAX_ADDRESS} characters"
    if not _ADDRESS.fullmatch(address):
        return "not an e-mail address"
    return None


@dataclass(frozen=True)
class NotificationSettings:
    """The SMTP and notification settings (one row). ``password_sealed`` is the SMTP password
    sealed with ``ca.Sealer``; ``password_env`` names an environment variable that holds it
    instead."""

    enabled: bool = False
    smtp_host: str = ""
    smtp_port: int = 587
    security: str = "starttls"
    username: str = ""
    password_sealed: str = ""
    password_env: str = ""
    from_address: str = ""
    timeout_s: int = 20
    unreachable_minutes: int = 30
    certificate_days: int = 14
    reminder_minutes: int = 60
    max_events: int = 10000
    max_messages: int = 10000


_SETTINGS = [f.name for f in fields(NotificationSettings)]


def get_notification_settings(conn: psycopg.Connection[Any]) -> NotificationSettings:
    row = conn.execute(
        sql.SQL("SELECT {} FROM notification_settings WHERE id = 1").format(
            sql.SQL(", ").join(map(sql.Identifier, _SETTINGS))
        )
    ).fetchone()
    return NotificationSettings(*row) if row else NotificationSettings()


def save_notification_settings(
    conn: psycopg.Connection[Any], settings: NotificationSettings
) -> None:
    values = [getattr(settings, name) for name in _SETTINGS]
    conn.execute(
        sql.SQL(
            "UPDATE notification_settings SET ({}) = ({}), updated_at = now() WHERE id = 1"
        ).format(
            sql.SQL(", ").join(map(sql.Identifier, _SETTINGS)),
            sql.SQL(", ").join(sql.Placeholder() * len(_SETTINGS)),
        ),
        values,
    )


@dataclass(frozen=True)
class Subscription:
    user_id: int
    email: str
    events: tuple[str, ...]


def get_subscription(conn: psycopg.Connection[Any], user_id: int) -> Subscription | None:
    row = conn.execute(
        "SELECT user_id, email, events FROM notification_subscriptions WHERE user_id = %s",
        (user_id,),
    ).fetchone()
    return Subscription(row[0], row[1], tuple(row[2])) if row else None


def save_subscription(
    conn: psycopg.Connection[Any], user_id: int, email: str, events: Sequence[str]
) -> None:
    """Set (or, with no e-mail address, remove) ``user_id``'s subscription."""
    if not email:
        conn.execute("DELETE FROM notification_subscriptions WHERE user_id = %s", (user_id,))
        return
    conn.execute(
        "INSERT INTO notification_subscriptions (user_id, email, events) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, events = EXCLUDED.events",
        (user_id, email, list(events)),
    )


@dataclass(frozen=True)
class Subscriber:
    user_id: int
    username: str
    email: str
    events: frozenset[str]
    scope: HostScope


def subscribers(conn: psycopg.Connection[Any], *, see_ungrouped: bool) -> list[Subscriber]:
    """Active users with an e-mail address and at least one subscribed event, each with the
    host scope their role gives them (``role_scope``, as ``web.authz.scope_of`` decides it)."""
    rows = conn.execute(
        "SELECT u.id, u.username, s.email, s.events, u.role,"
        " coalesce(array_agg(ug.group_id) FILTER (WHERE ug.group_id IS NOT NULL), '{}')"
        " FROM notification_subscriptions s JOIN users u ON u.id = s.user_id"
        " LEFT JOIN user_groups ug ON ug.user_id = u.id"
        " WHERE u.state = 'active' AND cardinality(s.events) > 0"
        " GROUP BY u.id, s.email, s.events ORDER BY u.id"
    ).fetchall()
    result = []
    for user_id, username, email, events, role, group_ids in rows:
        scope = role_scope(role, frozenset(group_ids), operators_see_ungrouped=see_ungrouped)
        result.append(Subscriber(user_id, username, email, frozenset(events), scope))
    return result


def visible_hosts(
    conn: psycopg.Connection[Any], scope: HostScope, host_ids: Sequence[int]
) -> set[int]:
    """The ids among ``host_ids`` that ``scope`` admits (hosts removed since are not)."""
    if not host_ids:
        return set()
    query = sql.SQL("SELECT h.id FROM hosts h WHERE h.id = ANY(%s) AND {}").format(
        scope_condition(scope, "h.id")
    )
    return {row[0] for row in conn.execute(query, (list(host_ids),))}


@dataclass(frozen=True)
class EventRow:
    id: int
    kind: str
    host_ids: tuple[int, ...]
    details: dict[str, Any]
    created_at: dt.datetime


def enqueue_event(
    conn: psycopg.Connection[Any],
    kind: str,
    host_ids: Sequence[int] = (),
    details: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Insert one event (a cheap insert, never waits for the sender); False when the episode
    ``dedupe_key`` names was told already (``notification_told``: kept after the event itself
    is pruned, until the episode ends)."""
    with conn.transaction():
        if dedupe_key is not None:
            told = conn.execute(
                "INSERT INTO notification_told (dedupe_key) VALUES (%s) ON CONFLICT DO NOTHING",
                (dedupe_key,),
            ).rowcount
            if told != 1:
                return False
        cur = conn.execute(
            "INSERT INTO notification_events (kind, dedupe_key, host_ids, details)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (dedupe_key) DO NOTHING",
            (kind, dedupe_key, list(host_ids), Jsonb(details or {})),
        )
    return cur.rowcount == 1


# An episode's key, as the periodic checks write it (and _forget_ended_episodes matches it).
_UNREACHABLE_KEY = "'unreachable:' || h.id || ':' || h.health_changed_at"
_CERTIFICATE_KEY = "'certificate:' || c.serial || ':' || c.not_after"


def _forget_ended_episodes(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    """Drop the told-records of episodes that ended: the host is no longer unreachable since
    that time, the certificate is no longer valid and unexpired, the occurrence has started."""
    conn.execute(
        "DELETE FROM notification_told t WHERE"
        " (t.dedupe_key LIKE 'unreachable:%%' AND NOT EXISTS (SELECT 1 FROM hosts h"
        " WHERE h.health = 'unreachable' AND h.health_changed_at IS NOT NULL"
        f" AND {_UNREACHABLE_KEY} = t.dedupe_key))"
        " OR (t.dedupe_key LIKE 'certificate:%%' AND NOT EXISTS (SELECT 1 FROM certificates c"
        " WHERE c.status = 'valid' AND c.not_after > %(now)s"
        f" AND {_CERTIFICATE_KEY} = t.dedupe_key))"
        " OR (t.dedupe_key ~ '^window:[0-9]+:' AND"
        " substring(t.dedupe_key from '^window:[0-9]+:(.*)$')::timestamptz <= %(now)s)",
        {"now": now},
    )


def pending_events(conn: psycopg.Connection[Any], limit: int = 1000) -> list[EventRow]:
    rows = conn.execute(
        "SELECT id, kind, host_ids, details, created_at FROM notification_events"
        " WHERE dispatched_at IS NULL ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    return [EventRow(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in rows]


def record_due_events(
    conn: psycopg.Connection[Any], settings: NotificationSettings, now: dt.datetime
) -> int:
    """Insert the events the periodic checks find (each episode once): hosts unreachable for
    longer than ``unreachable_minutes``; valid certificates expiring within
    ``certificate_days`` that no newer valid certificate of the same kind for the same host
    has replaced (a renewal leaves the old one valid until it expires). Returns how many were
    new."""
    with conn.transaction():
        _forget_ended_episodes(conn, now)
        added = _record_due(conn, settings, now)
    return max(added, 0)


def _record_due(
    conn: psycopg.Connection[Any], settings: NotificationSettings, now: dt.datetime
) -> int:
    # Each: the due episodes; those not told yet are recorded as told and become events.
    added = conn.execute(
        "WITH due AS (SELECT " + _UNREACHABLE_KEY + " AS key, ARRAY[h.id] AS host_ids,"
        " jsonb_build_object('host', h.name, 'since', h.health_changed_at,"
        " 'reason', h.health_reason) AS details"
        " FROM hosts h WHERE h.health = 'unreachable' AND h.health_changed_at IS NOT NULL"
        " AND h.health_changed_at <= %s - make_interval(mins => %s)),"
        " told AS (INSERT INTO notification_told (dedupe_key, told_at) SELECT key, %s FROM due"
        " ON CONFLICT DO NOTHING RETURNING dedupe_key)"
        " INSERT INTO notification_events (kind, dedupe_key, host_ids, details)"
        " SELECT 'host_unreachable', due.key, due.host_ids, due.details"
        " FROM due JOIN told ON told.dedupe_key = due.key"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (now, settings.unreachable_minutes, now),
    ).rowcount
    added += conn.execute(
        "WITH due AS (SELECT " + _CERTIFICATE_KEY + " AS key,"
        " CASE WHEN c.host_id IS NULL THEN '{}'::bigint[] ELSE ARRAY[c.host_id] END AS host_ids,"
        " jsonb_build_object('subject', c.subject, 'kind', c.kind, 'not_after', c.not_after,"
        " 'host', h.name) AS details"
        " FROM certificates c LEFT JOIN hosts h ON h.id = c.host_id"
        " WHERE c.status = 'valid' AND c.not_after > %s"
        " AND c.not_after <= %s + make_interval(days => %s)"
        # renewed: a newer valid certificate of the same kind for the same host replaces it
        " AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.status = 'valid'"
        " AND n.kind = c.kind AND n.host_id IS NOT DISTINCT FROM c.host_id"
        " AND n.not_after > c.not_after)),"
        " told AS (INSERT INTO notification_told (dedupe_key, told_at) SELECT key, %s FROM due"
        " ON CONFLICT DO NOTHING RETURNING dedupe_key)"
        " INSERT INTO notification_events (kind, dedupe_key, host_ids, details)"
        " SELECT 'certificate_expiry', due.key, due.host_ids, due.details"
        " FROM due JOIN told ON told.dedupe_key = due.key"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (now, now, settings.certificate_days, now),
    ).rowcount
    return added


def drop_excess_events(conn: psycopg.Connection[Any], keep: int) -> int:
    """Bound the outbox of events: drop the oldest undispatched beyond ``keep`` (counted in
    ``dropped_events``) and forget dispatched ones beyond ``keep``."""
    with conn.transaction():
        dropped = conn.execute(
            "DELETE FROM notification_events WHERE id IN (SELECT id FROM notification_events"
            " WHERE dispatched_at IS NULL ORDER BY id DESC OFFSET %s)",
            (keep,),
        ).rowcount
        if dropped > 0:
            conn.execute(
                "UPDATE notification_settings SET dropped_events = dropped_events + %s"
                " WHERE id = 1",
                (dropped,),
            )
        conn.execute(
            "DELETE FROM notification_events WHERE id IN (SELECT id FROM notification_events"
            " WHERE dispatched_at IS NOT NULL ORDER BY id DESC OFFSET %s)",
            (keep,),
        )
    return max(dropped, 0)


def window_hosts(conn: psycopg.Connection[Any]) -> dict[int, list[int]]:
    """The hosts of each enabled maintenance window: its own host, or its group's members."""
    rows = conn.execute(
        "SELECT w.id, coalesce(array_agg(DISTINCT coalesce(w.host_id, hg.host_id))"
        " FILTER (WHERE coalesce(w.host_id, hg.host_id) IS NOT NULL), '{}')"
        " FROM maintenance_windows w LEFT JOIN host_groups hg ON hg.group_id = w.group_id"
        " WHERE w.enabled GROUP BY w.id"
    ).fetchall()
    return {window_id: sorted(host_ids) for window_id, host_ids in rows}
