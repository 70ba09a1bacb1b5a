"""What the pages need to show things the same way everywhere (issue 16): each user's time zone,
the natural sort key of host names (``hosts.name_key``, stored by migration 0021), which discovered
addresses are registered hosts, and the discovery scan history. Functions take a connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import NotFound

# The order of a host list's "Host" column: its display name (or name) naturally (the list
# adds the address to every order): migration 0021's stored natural_key of the shown name,
# indexed with the address. Health sorts by severity: hosts that need a look first.
HOST_NAME_ORDER = "h.name_key"
HEALTH_ORDER = (
    "CASE h.health WHEN 'unreachable' THEN 0 WHEN 'degraded' THEN 1 WHEN 'pending' THEN 2"
    " ELSE 3 END"
)


def user_time_zones(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """Every user's time zone by user id."""
    return {int(r[0]): r[1] for r in conn.execute("SELECT id, time_zone FROM users").fetchall()}


def user_time_zone(conn: psycopg.Connection[Any], user_id: int) -> str:
    row = conn.execute("SELECT time_zone FROM users WHERE id = %s", (user_id,)).fetchone()
    return "UTC" if row is None else str(row[0])


def set_user_time_zone(conn: psycopg.Connection[Any], user_id: int, zone: str) -> None:
    """Store ``zone`` (already checked by the caller); ``NotFound`` for an unknown user."""
    updated = conn.execute(
        "UPDATE users SET time_zone = %s WHERE id = %s", (zone, user_id)
    ).rowcount
    if updated == 0:
        raise NotFound(f"no user {user_id}")


@dataclass(frozen=True)
class RegisteredAddress:
    address: str
    host_id: int
    name: str  # the host's display name, or its name


def registered_addresses(
    conn: psycopg.Connection[Any], addresses: Sequence[str]
) -> dict[str, RegisteredAddress]:
    """Which of ``addresses`` belong to registered hosts (any port), by address."""
    if not addresses:
        return {}
    rows = conn.execute(
        "SELECT host(address), id, coalesce(nullif(display_name, ''), name) FROM hosts"
        " WHERE address = ANY(%s::inet[]) ORDER BY id",
        (list(addresses),),
    ).fetchall()
    found: dict[str, RegisteredAddress] = {}
    for address, host_id, name in rows:
        found.setdefault(address, RegisteredAddress(address, int(host_id), name))
    return found


@dataclass(frozen=True)
class ScanSummary:
    id: int
    cidr: str
    status: str
    total: int
    probed: int
    found: int
    started_at: dt.datetime
    finished_at: dt.datetime | None


def recent_scans(conn: psycopg.Connection[Any], limit: int = 20) -> list[ScanSummary]:
    """The latest discovery scans, newest first (stored: they survive a restart)."""
    rows = conn.execute(
        "SELECT id, cidr::text, status, total, probed, found, started_at, finished_at"
        " FROM discovery_scans ORDER BY started_at DESC, id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [ScanSummary(*r) for r in rows]
