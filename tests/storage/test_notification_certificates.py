"""Certificate-expiry events: a certificate already renewed (a newer valid one of the same kind
for the same host exists) is not reported as expiring (review F13b #5)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import Database, insert_host
from storage.notifications import NotificationSettings, pending_events, record_due_events

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _cert(
    conn: psycopg.Connection[Any], serial: int, kind: str, days: int, host_id: int | None
) -> None:
    conn.execute(
        "INSERT INTO certificates (serial, kind, subject, not_before, not_after, host_id,"
        " cert_pem) VALUES (%s, %s, %s, %s, %s, %s, 'pem')",
        (serial, kind, f"CN=c{serial}", NOW - dt.timedelta(days=300),
         NOW + dt.timedelta(days=days), host_id),
    )  # fmt: skip


async def test_only_certificates_without_a_newer_valid_one_of_their_kind_and_host_are_told(
    db: Database,
) -> None:
    def setup(conn: psycopg.Connection[Any]) -> None:
        a = insert_host(conn, name="a", address=None, groups=[]).id
        b = insert_host(conn, name="b", address=None, groups=[]).id
        _cert(conn, 1, "agent_server", 5, a)  # renewed: 2 is newer, same host
        _cert(conn, 2, "agent_server", 365, a)
        _cert(conn, 3, "agent_server", 6, b)  # host b's only one: told
        _cert(conn, 4, "manager_client", 7, None)  # renewed: 5
        _cert(conn, 5, "manager_client", 700, None)
        _cert(conn, 6, "web_server", 8, None)  # a newer manager_client does not count

    await db.run(setup)
    added = await db.run(record_due_events, NotificationSettings(certificate_days=14), NOW)
    events = await db.run(pending_events)
    assert sorted(e.details["subject"] for e in events) == ["CN=c3", "CN=c6"]
    assert added == 2
