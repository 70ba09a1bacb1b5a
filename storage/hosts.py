"""Hosts, groups, host state, patch data and discovery scans. Functions take a connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .errors import Conflict, NotFound
from .scope import HostScope, scope_condition

EVERYTHING = HostScope(all_hosts=True)


@dataclass(frozen=True)
class HostRow:
    id: int
    name: str
    address: str | None
    port: int
    display_name: str
    paused: bool
    groups: tuple[str, ...]


_HOST_SELECT = (
    "SELECT h.id, h.name, host(h.address), h.port, h.display_name, h.paused,"
    " coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}')"
    " FROM hosts h LEFT JOIN host_groups hg ON hg.host_id = h.id"
    " LEFT JOIN groups g ON g.id = hg.group_id"
)


def _host(row: Sequence[Any]) -> HostRow:
    return HostRow(row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6]))


def list_hosts(conn: psycopg.Connection[Any]) -> list[HostRow]:
    rows = conn.execute(_HOST_SELECT + " GROUP BY h.id ORDER BY h.id").fetchall()
    return [_host(r) for r in rows]


def get_host(
    conn: psycopg.Connection[Any], key: int | str, scope: HostScope = EVERYTHING
) -> HostRow:
    """The host by id or name; ``NotFound`` when unknown or outside ``scope`` (the two are
    told apart by nobody)."""
    where = " WHERE h.id = %s" if isinstance(key, int) else " WHERE h.name = %s"
    query = sql.Composed(
        [
            sql.SQL(_HOST_SELECT + where + " AND "),
            scope_condition(scope, "h.id"),
            sql.SQL(" GROUP BY h.id"),
        ]
    )  # (composed, not formatted: the select holds a literal '{}')
    row = conn.execute(query, (key,)).fetchone()
    if row is None:
        raise NotFound(f"no host {key!r}")
    return _host(row)


def ensure_groups(conn: psycopg.Connection[Any], names: Iterable[str]) -> list[int]:
    ids = []
    for name in names:
        row = conn.execute(
            "INSERT INTO groups (name) VALUES (%s) ON CONFLICT (name) DO UPDATE"
            " SET name = excluded.name RETURNING id",
            (name,),
        ).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


def insert_host(
    conn: psycopg.Connection[Any],
    *,
    name: str,
    address: str | None,
    port: int = 12443,
    display_name: str = "",
    groups: Sequence[str] = (),
) -> HostRow:
    """Register a host. Raises Conflict if the name or the address is already registered."""
    with conn.transaction():
        if address is not None:
            taken = conn.execute(
                "SELECT name FROM hosts WHERE address = %s AND port = %s", (address, port)
            ).fetchone()
            if taken:
                raise Conflict(f"{address}:{port} is already registered as {taken[0]!r}")
        try:
            row = conn.execute(
                "INSERT INTO hosts (name, address, port, display_name) VALUES (%s, %s, %s, %s)"
                " RETURNING id",
                (name, address, port, display_name),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"a host named {name!r} is already registered") from None
        assert row is not None
        host_id = int(row[0])
        for group_id in ensure_groups(conn, groups):
            conn.execute(
                "INSERT INTO host_groups (host_id, group_id) VALUES (%s, %s)", (host_id, group_id)
            )
    return get_host(conn, host_id)


def delete_host(conn: psycopg.Connection[Any], key: int | str) -> HostRow:
    host = get_host(conn, key)
    conn.execute("DELETE FROM hosts WHERE id = %s", (host.id,))
    return host


def set_paused(conn: psycopg.Connection[Any], host_id: int, paused: bool) -> None:
    if conn.execute("UPDATE hosts SET paused = %s WHERE id = %s", (paused, host_id)).rowcount == 0:
        raise NotFound(f"no host {host_id}")


def request_host_refresh(conn: psycopg.Connection[Any], host_ids: Sequence[int]) -> None:
    """Ask a running server to poll these hosts now (every host when empty): a ``host_refresh``
    notification, delivered when the connection's transaction commits (``hosts refresh``)."""
    payload = ",".join(str(int(i)) for i in host_ids)
    conn.execute("SELECT pg_notify('host_refresh', %s)", (payload,))


# -- state written by the host actors -----------------------------------------------------------


@dataclass(frozen=True)
class HostState:
    """The columns a host actor owns on its host row."""

    health: str
    health_reason: str
    last_seen_at: dt.datetime | None
    last_health_poll_at: dt.datetime | None
    last_patch_poll_at: dt.datetime | None
    last_error: str
    hostname: str
    os: str
    os_version: str
    kernel: str
    architecture: str
    agent_version: str
    uptime_seconds: int | None
    last_boot_at: dt.datetime | None
    pending_reboot: bool
    package_db_clean: bool | None
    crl_status: str
    gpg_key_status: str
    pending_patches: int
    security_patches: int
    reboot_patches: int


STATE_COLUMNS = tuple(f.name for f in fields(HostState))


@dataclass(frozen=True)
class Transition:
    host_id: int
    at: dt.datetime
    from_state: str
    to_state: str
    reason: str


def write_host_states(
    conn: psycopg.Connection[Any],
    states: Sequence[tuple[int, HostState]],
    transitions: Sequence[Transition] = (),
) -> int:
    """Write the latest state of many hosts and their transitions in one transaction."""
    assignments = ", ".join(f"{c} = %s" for c in STATE_COLUMNS)
    with conn.transaction(), conn.cursor() as cur:
        if states:
            cur.executemany(
                f"UPDATE hosts SET {assignments}, health_changed_at = CASE WHEN health <> %s"
                " THEN now() ELSE health_changed_at END WHERE id = %s",
                [(*astuple(state), state.health, host_id) for host_id, state in states],
            )
        if transitions:
            cur.executemany(
                "INSERT INTO host_health_history (host_id, at, from_state, to_state, reason)"
                " VALUES (%s, %s, %s, %s, %s)",
                [astuple(t) for t in transitions],
            )
    return len(states) + len(transitions)


def load_host_state(conn: psycopg.Connection[Any], host_id: int) -> HostState | None:
    row = conn.execute(
        f"SELECT {', '.join(STATE_COLUMNS)} FROM hosts WHERE id = %s", (host_id,)
    ).fetchone()
    return None if row is None else HostState(*row)


def last_health_change(conn: psycopg.Connection[Any], host_id: int) -> dt.datetime | None:
    """When the host's health last changed: its last stored transition (the time its actor
    saw it), else the row's ``health_changed_at`` (transitions pruned by retention)."""
    row = conn.execute(
        "SELECT coalesce((SELECT at FROM host_health_history WHERE host_id = %s"
        " ORDER BY at DESC, id DESC LIMIT 1), health_changed_at) FROM hosts WHERE id = %s",
        (host_id, host_id),
    ).fetchone()
    return None if row is None else row[0]


def health_history(conn: psycopg.Connection[Any], host_id: int) -> list[Transition]:
    rows = conn.execute(
        "SELECT host_id, at, from_state, to_state, reason FROM host_health_history"
        " WHERE host_id = %s ORDER BY at, id",
        (host_id,),
    ).fetchall()
    return [Transition(*r) for r in rows]


@dataclass(frozen=True)
class PatchRow:
    name: str
    current_version: str
    available_version: str
    severity: str
    cve_ids: tuple[str, ...]
    requires_reboot: bool


def load_patch_data(
    conn: psycopg.Connection[Any], host_id: int
) -> tuple[dict[str, PatchRow], dict[str, str]]:
    """The open patches and the installed packages of a host, as last stored."""
    patches = {
        r[0]: PatchRow(r[0], r[1], r[2], r[3], tuple(r[4]), r[5])
        for r in conn.execute(
            "SELECT name, current_version, available_version, severity, cve_ids,"
            " requires_reboot FROM host_patches WHERE host_id = %s AND resolved_at IS NULL",
            (host_id,),
        ).fetchall()
    }
    packages = dict(
        conn.execute(
            "SELECT name, version FROM host_packages WHERE host_id = %s", (host_id,)
        ).fetchall()
    )
    return patches, packages


def write_patch_changes(
    conn: psycopg.Connection[Any],
    host_id: int,
    *,
    now: dt.datetime,
    upserts: Sequence[PatchRow] = (),
    resolved: Sequence[str] = (),
    package_upserts: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    package_deletes: Sequence[str] = (),
) -> int:
    """Apply a patch-poll diff in one transaction; returns the rows written.

    A patch that is new opens an episode (first_seen_at = now); a changed one is updated in
    place (its first_seen_at kept, so time-to-remediate counts from the first sighting); a
    vanished one is resolved.

    Every package upsert goes in ONE statement over one JSON object {name: version} (encoded
    by msgspec in C), not one statement per package: a host's first poll stores ~1,200
    packages, and per-row statements were most of the ingest's PostgreSQL time and much of its
    Python time. ``package_upserts`` as pairs or as a mapping (names are unique either way).
    """
    written = 0
    with conn.transaction(), conn.cursor() as cur:
        if upserts:
            cur.executemany(
                "INSERT INTO host_patches (host_id, name, current_version, available_version,"
                " severity, cve_ids, requires_reboot, first_seen_at, last_seen_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (host_id, name) WHERE resolved_at IS NULL DO UPDATE SET"
                " current_version = excluded.current_version,"
                " available_version = excluded.available_version, severity = excluded.severity,"
                " cve_ids = excluded.cve_ids, requires_reboot = excluded.requires_reboot,"
                " last_seen_at = excluded.last_seen_at",
                [
                    (host_id, p.name, p.current_version, p.available_version, p.severity,
                     list(p.cve_ids), p.requires_reboot, now, now)
                    for p in upserts
                ],
            )  # fmt: skip
            written += len(upserts)
        if resolved:
            cur.execute(
                "UPDATE host_patches SET resolved_at = %s, last_seen_at = %s"
                " WHERE host_id = %s AND resolved_at IS NULL AND name = ANY(%s)",
                (now, now, host_id, list(resolved)),
            )
            written += len(resolved)
        if package_upserts:
            versions = (
                package_upserts if isinstance(package_upserts, Mapping) else dict(package_upserts)
            )
            cur.execute(
                "INSERT INTO host_packages (host_id, name, version)"
                " SELECT %s, p.key, p.value FROM jsonb_each_text(%s) AS p"
                " ON CONFLICT (host_id, name) DO UPDATE SET version = excluded.version",
                (host_id, Jsonb(versions, dumps=_encode_json)),
            )
            written += len(package_upserts)
        if package_deletes:
            cur.execute(
                "DELETE FROM host_packages WHERE host_id = %s AND name = ANY(%s)",
                (host_id, list(package_deletes)),
            )
            written += len(package_deletes)
    return written


def _encode_json(value: object) -> str:
    return msgspec.json.encode(value).decode()


# -- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveryResult:
    address: str
    hostname: str
    os: str
    agent_version: str


def create_scan(conn: psycopg.Connection[Any], cidr: str, total: int) -> int:
    row = conn.execute(
        "INSERT INTO discovery_scans (cidr, total) VALUES (%s, %s) RETURNING id", (cidr, total)
    ).fetchone()
    assert row is not None
    return int(row[0])


def update_scan(
    conn: psycopg.Connection[Any],
    scan_id: int,
    *,
    probed: int,
    found: int,
    status: str | None = None,
    error: str = "",
) -> None:
    if status is None:
        conn.execute(
            "UPDATE discovery_scans SET probed = %s, found = %s WHERE id = %s",
            (probed, found, scan_id),
        )
    else:
        conn.execute(
            "UPDATE discovery_scans SET probed = %s, found = %s, status = %s, error = %s,"
            " finished_at = now() WHERE id = %s",
            (probed, found, status, error, scan_id),
        )


def add_scan_results(
    conn: psycopg.Connection[Any], scan_id: int, results: Sequence[DiscoveryResult]
) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO discovery_results (scan_id, address, hostname, os, agent_version)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(scan_id, *astuple(r)) for r in results],
        )


def scan_results(conn: psycopg.Connection[Any], scan_id: int) -> list[DiscoveryResult]:
    rows = conn.execute(
        "SELECT host(address), hostname, os, agent_version FROM discovery_results"
        " WHERE scan_id = %s ORDER BY address",
        (scan_id,),
    ).fetchall()
    return [DiscoveryResult(*r) for r in rows]


@dataclass(frozen=True)
class DiscoveryScanRow:
    """A stored scan: what ``GET /api/v1/discovery/{id}`` shows once it left the server's memory."""

    id: int
    cidr: str
    status: str  # running | finished | cancelled | failed
    total: int
    probed: int
    found: int
    error: str
    results: tuple[DiscoveryResult, ...]


def get_scan(conn: psycopg.Connection[Any], scan_id: int) -> DiscoveryScanRow | None:
    """A scan with its results, or None if there is no scan ``scan_id``."""
    row = conn.execute(
        "SELECT id, cidr::text, status, total, probed, found, error FROM discovery_scans"
        " WHERE id = %s",
        (scan_id,),
    ).fetchone()
    if row is None:
        return None
    scan_id_, cidr, status, total, probed, found, error = row
    results = tuple(scan_results(conn, scan_id))
    return DiscoveryScanRow(scan_id_, cidr, status, total, probed, found, error, results)
