"""The fleet as the command line lists it, and the refresh request it sends to a running server
(``patch-manager hosts list`` / ``hosts refresh``). Functions take a connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class HostTableRow:
    id: int
    name: str
    address: str  # "" when not resolved
    port: int
    health: str
    pending_patches: int
    security_patches: int
    pending_reboot: bool
    last_seen_at: dt.datetime | None
    os: str
    display_name: str
    groups: str  # comma-separated, sorted


_HOST_TABLE = (
    "SELECT h.id, h.name, coalesce(host(h.address), ''), h.port, h.health, h.pending_patches,"
    " h.security_patches, h.pending_reboot, h.last_seen_at, h.os, h.display_name,"
    " coalesce(string_agg(g.name, ',' ORDER BY g.name), '')"
    " FROM hosts h LEFT JOIN host_groups hg ON hg.host_id = h.id"
    " LEFT JOIN groups g ON g.id = hg.group_id GROUP BY h.id"
    " ORDER BY natural_key(h.name), h.address"  # .2 before .10 (migration 0016)
)


def host_table(conn: psycopg.Connection[Any]) -> list[HostTableRow]:
    """Every host in natural order of its name, with its state and groups."""
    return [HostTableRow(*row) for row in conn.execute(_HOST_TABLE).fetchall()]


def request_host_refresh(conn: psycopg.Connection[Any], host_ids: Sequence[int]) -> None:
    """Ask a running server to poll these hosts now (every host when empty): a ``host_refresh``
    notification, delivered when the connection's transaction commits."""
    payload = ",".join(str(int(i)) for i in host_ids)
    conn.execute("SELECT pg_notify('host_refresh', %s)", (payload,))
