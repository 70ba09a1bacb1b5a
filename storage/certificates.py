"""Certificate records (the CA package creates them; this module stores them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from .errors import NotFound


@dataclass(frozen=True)
class StoredCertificate:
    serial: int
    kind: str
    subject: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    status: str
    revoked_at: dt.datetime | None


def record_certificate(
    conn: psycopg.Connection[Any],
    *,
    serial: int,
    kind: str,
    subject: str,
    sans: Sequence[str],
    not_before: dt.datetime,
    not_after: dt.datetime,
    cert_pem: str,
    host_id: int | None = None,
) -> None:
    conn.execute(
        "INSERT INTO certificates"
        " (serial, kind, subject, sans, not_before, not_after, cert_pem, host_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (serial) DO NOTHING",
        (Decimal(serial), kind, subject, list(sans), not_before, not_after, cert_pem, host_id),
    )


def revoke_certificate(conn: psycopg.Connection[Any], serial: int) -> None:
    """Mark a certificate revoked (idempotent). Raises NotFound for an unknown serial."""
    row = conn.execute(
        "UPDATE certificates SET status = 'revoked', revoked_at = coalesce(revoked_at, now())"
        " WHERE serial = %s RETURNING serial",
        (Decimal(serial),),
    ).fetchone()
    if row is None:
        raise NotFound(f"no certificate with serial {serial:x} was issued by this CA")


def revoked_serials(conn: psycopg.Connection[Any]) -> list[tuple[int, dt.datetime]]:
    rows = conn.execute(
        "SELECT serial, revoked_at FROM certificates WHERE status = 'revoked' ORDER BY revoked_at"
    ).fetchall()
    return [(int(serial), when) for serial, when in rows]


def list_certificates(conn: psycopg.Connection[Any]) -> list[StoredCertificate]:
    rows = conn.execute(
        "SELECT serial, kind, subject, sans, not_before, not_after, status, revoked_at"
        " FROM certificates ORDER BY created_at"
    ).fetchall()
    return [
        StoredCertificate(int(r[0]), r[1], r[2], tuple(r[3]), r[4], r[5], r[6], r[7]) for r in rows
    ]


def refused_agent_serials(conn: psycopg.Connection[Any]) -> tuple[list[int], list[int]]:
    """``(revoked, not_agent)``: serials the manager must not accept from an agent."""
    rows = conn.execute(
        "SELECT serial, status = 'revoked', kind <> 'agent_server' FROM certificates"
        " WHERE status = 'revoked' OR kind <> 'agent_server'"
    ).fetchall()
    return [int(r[0]) for r in rows if r[1]], [int(r[0]) for r in rows if r[2]]
