"""Read models for the UI and API: host search, host detail, groups, fleet counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from .display import HEALTH_ORDER, HOST_NAME_ORDER
from .errors import Conflict, NotFound
from .scope import HostScope, scope_condition

EVERYTHING = HostScope(all_hosts=True)


@dataclass(frozen=True)
class HostListItem:
    id: int
    name: str
    display_name: str
    address: str
    health: str
    health_reason: str
    os: str
    os_version: str
    agent_version: str
    pending_patches: int
    security_patches: int
    pending_reboot: bool
    last_seen_at: dt.datetime | None
    paused: bool
    groups: tuple[str, ...]


CONDITIONS = ("unknown", "stale", "failing", "halted", "paused", "healthy", "degraded",
              "unreachable")  # fmt: skip
# Worst first: what "sort by condition" means.
CONDITION_ORDER = ("unreachable", "failing", "halted", "stale", "degraded", "unknown", "paused",
                   "healthy")  # fmt: skip
# A host without a live snapshot: its stored health as a condition.
STORED_CONDITION = (
    "CASE WHEN h.paused THEN 'paused' WHEN h.health = 'pending' THEN 'unknown' ELSE h.health END"
)


@dataclass(frozen=True)
class HostEntry(HostListItem):
    """A listed host with its condition as of now (``web.freshness``): what the API and the CLI
    list, the same as the pages show."""

    condition: str
    why: str
    health_as_of: dt.datetime | None
    patches_as_of: dt.datetime | None
    stale_after: dt.datetime | None
    # While a poll fails (web.freshness.Freshness): since when, retries used of retries_total,
    # the next attempt; for the health poll and for the patch poll alone. health_since: the
    # last health transition.
    failing_since: dt.datetime | None = None
    retries_used: int = 0
    retries_total: int = 0
    next_attempt: dt.datetime | None = None
    patch_failing_since: dt.datetime | None = None
    patch_retries_used: int = 0
    patch_next_attempt: dt.datetime | None = None
    health_since: dt.datetime | None = None


@dataclass(frozen=True)
class HostFilter:
    group: str = ""
    health: str = ""
    os: str = ""
    min_pending: int = 0
    reboot: bool | None = None
    text: str = ""
    sort: str = "name"
    descending: bool = False
    limit: int = 50
    offset: int = 0
    # What the data supports as of now (``condition`` filter, ``sort="condition"``): the
    # service passes the live hosts' conditions; a host without one counts by stored health.
    condition: str = ""
    live: tuple[tuple[int, str], ...] = ()


SORTS = {
    "name": HOST_NAME_ORDER,
    "health": HEALTH_ORDER,
    "os": "h.os",
    "pending": "h.pending_patches",
    "security": "h.security_patches",
    "last_seen": "h.last_seen_at",
    "condition": "",  # by CONDITION_ORDER: see search_hosts
}
HEALTH_STATES = ("pending", "healthy", "degraded", "unreachable")


def contains(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (``%``, ``_`` and ``\\`` escaped;
    used with ``ESCAPE '\\'``): a filter is text, never a pattern."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_hosts(
    conn: psycopg.Connection[Any], f: HostFilter, scope: HostScope = EVERYTHING
) -> tuple[list[HostListItem], int]:
    """One page of hosts matching ``f`` within ``scope`` and the total number of matches.
    ``text`` and ``os`` match literally (no wildcards)."""
    where: list[sql.Composable] = [scope_condition(scope, "h.id")]
    params: list[Any] = []
    if f.group:
        where.append(sql.SQL("EXISTS (SELECT 1 FROM host_groups hg2 JOIN groups g2"
                             " ON g2.id = hg2.group_id WHERE hg2.host_id = h.id"
                             " AND g2.name = %s)"))  # fmt: skip
        params.append(f.group)
    if f.health:
        where.append(sql.SQL("h.health = %s"))
        params.append(f.health)
    live_ids = [host_id for host_id, _ in f.live]
    if f.condition:
        matching = [host_id for host_id, condition in f.live if condition == f.condition]
        where.append(sql.SQL("(h.id = ANY(%s) OR (NOT h.id = ANY(%s) AND {stored} = %s))").format(
            stored=sql.SQL(STORED_CONDITION)
        ))  # fmt: skip
        params += [matching, live_ids, f.condition]
    if f.os:
        where.append(sql.SQL("h.os ILIKE %s ESCAPE '\\'"))
        params.append(contains(f.os))
    if f.min_pending:
        where.append(sql.SQL("h.pending_patches >= %s"))
        params.append(f.min_pending)
    if f.reboot is not None:
        where.append(sql.SQL("h.pending_reboot = %s"))
        params.append(f.reboot)
    if f.text:
        where.append(sql.SQL("(h.name ILIKE %s ESCAPE '\\' OR h.display_name ILIKE %s ESCAPE '\\'"
                             " OR h.hostname ILIKE %s ESCAPE '\\'"
                             " OR host(h.address) LIKE %s ESCAPE '\\')"))  # fmt: skip
        params += [contains(f.text)] * 4
    condition = sql.SQL(" AND ").join(where)
    direction = sql.SQL("DESC NULLS LAST" if f.descending else "ASC NULLS LAST")
    key = SORTS.get(f.sort, SORTS["name"])
    join, join_params = sql.SQL(""), []
    if f.sort == "condition":
        rank = {condition: index for index, condition in enumerate(CONDITION_ORDER)}
        join = sql.SQL(" LEFT JOIN unnest(%s::bigint[], %s::int[]) AS c(id, rank) ON c.id = h.id")
        join_params = [live_ids, [rank.get(condition, 99) for _, condition in f.live]]
        stored = " ".join(f"WHEN '{c}' THEN {i}" for i, c in enumerate(CONDITION_ORDER))
        key = f"coalesce(min(c.rank), CASE {STORED_CONDITION} {stored} ELSE 99 END)"
    # Equal names (or the other columns' ties) fall back to the address, numerically.
    order = sql.SQL("{key} {direction}, h.address").format(key=sql.SQL(key), direction=direction)
    # The page first (the name order walks its index and stops after ``limit`` rows), then the
    # groups of just those hosts; the total is counted apart (a window count over the join
    # made every page aggregate every host: 18 ms instead of 1 at 10,000 hosts).
    query = sql.SQL(
        "SELECT h.id, h.name, h.display_name, coalesce(host(h.address), ''), h.health,"
        " h.health_reason, h.os, h.os_version, h.agent_version, h.pending_patches,"
        " h.security_patches, h.pending_reboot, h.last_seen_at, h.paused,"
        " coalesce((SELECT array_agg(g.name ORDER BY g.name) FROM host_groups hg"
        " JOIN groups g ON g.id = hg.group_id WHERE hg.host_id = h.id), '{{}}')"
        " FROM hosts h{join} WHERE {condition}{group} ORDER BY {order}, h.id"
        " LIMIT %s OFFSET %s"
    ).format(
        condition=condition,
        order=order,
        join=join,
        group=sql.SQL(" GROUP BY h.id" if f.sort == "condition" else ""),
    )
    rows = conn.execute(query, [*join_params, *params, f.limit, f.offset]).fetchall()
    if 0 < len(rows) < f.limit or (not rows and f.offset == 0 and f.limit > 0):
        total = f.offset + len(rows)  # the last page: nothing after it to count
    else:
        total = _count(conn, condition, params)
    items = [HostListItem(*r[:14], tuple(r[14])) for r in rows]  # type: ignore[call-arg]
    return items, total


def existing_host_ids(
    conn: psycopg.Connection[Any], host_ids: Sequence[int], scope: HostScope = EVERYTHING
) -> set[int]:
    """Which of ``host_ids`` are registered hosts within ``scope``."""
    query = sql.SQL("SELECT h.id FROM hosts h WHERE h.id = ANY(%s) AND {c}").format(
        c=scope_condition(scope, "h.id")
    )
    rows = conn.execute(query, (list(host_ids),)).fetchall()
    return {int(r[0]) for r in rows}


def group_exists(conn: psycopg.Connection[Any], group_id: int) -> bool:
    return conn.execute("SELECT 1 FROM groups WHERE id = %s", (group_id,)).fetchone() is not None


def host_count(conn: psycopg.Connection[Any], scope: HostScope = EVERYTHING) -> int:
    """The hosts within ``scope``."""
    query = sql.SQL("SELECT count(*) FROM hosts h WHERE {c}").format(
        c=scope_condition(scope, "h.id")
    )
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _count(conn: psycopg.Connection[Any], condition: sql.Composable, params: list[Any]) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM hosts h WHERE {c}").format(c=condition), params
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class FleetCounts:
    by_health: dict[str, int]  # the stored health of the last poll
    reboot_needed: int
    pending_by_severity: dict[str, int]
    hosts: int
    # What the data supports as of now (web.freshness): the service fills it from the live
    # snapshots; here the stored health (pending = unknown, paused hosts paused).
    by_condition: dict[str, int] = field(default_factory=dict)


def fleet_counts(
    conn: psycopg.Connection[Any],
    scope: HostScope = EVERYTHING,
    without: Sequence[int] = (),
) -> FleetCounts:
    """Counts over the hosts within ``scope``, leaving out the hosts ``without``."""
    c: sql.Composable = scope_condition(scope, "h.id")
    if without:
        c = sql.SQL("{c} AND NOT h.id = ANY({ids})").format(c=c, ids=sql.Literal(list(without)))
    by_health = {state: 0 for state in HEALTH_STATES}
    by_condition = {condition: 0 for condition in CONDITIONS}
    query = sql.SQL("SELECT health, paused, count(*) FROM hosts h WHERE {c} GROUP BY 1, 2").format(
        c=c
    )
    for state, paused, count in conn.execute(query).fetchall():
        by_health[state] = by_health.get(state, 0) + int(count)
        condition = "paused" if paused else "unknown" if state == "pending" else state
        by_condition[condition] = by_condition.get(condition, 0) + int(count)
    reboot = conn.execute(
        sql.SQL("SELECT count(*) FROM hosts h WHERE pending_reboot AND {c}").format(c=c)
    ).fetchone()
    severities = {s: 0 for s in ("critical", "high", "medium", "low")}
    for severity, count in conn.execute(
        sql.SQL(
            "SELECT severity, count(*) FROM host_patches p WHERE resolved_at IS NULL AND {c}"
            " GROUP BY 1"
        ).format(c=scope_condition(scope, "p.host_id"))
    ).fetchall():
        severities[severity] = int(count)
    return FleetCounts(by_health, int(reboot[0]) if reboot else 0, severities,
                       sum(by_health.values()), by_condition)  # fmt: skip


@dataclass(frozen=True)
class PatchItem:
    name: str
    current_version: str
    available_version: str
    severity: str
    requires_reboot: bool
    first_seen_at: dt.datetime


def open_patches(conn: psycopg.Connection[Any], host_id: int) -> list[PatchItem]:
    rows = conn.execute(
        "SELECT name, current_version, available_version, severity, requires_reboot,"
        " first_seen_at FROM host_patches WHERE host_id = %s AND resolved_at IS NULL"
        " ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2"
        " ELSE 3 END, name",
        (host_id,),
    ).fetchall()
    return [PatchItem(*r) for r in rows]


def installed_packages(
    conn: psycopg.Connection[Any], host_id: int, text: str = "", limit: int = 200
) -> tuple[list[tuple[str, str]], int]:
    rows = conn.execute(
        "SELECT name, version, count(*) OVER () FROM host_packages"
        " WHERE host_id = %s AND name ILIKE %s ESCAPE '\\' ORDER BY name LIMIT %s",
        (host_id, contains(text), limit),
    ).fetchall()
    return [(r[0], r[1]) for r in rows], int(rows[0][2]) if rows else 0


# -- groups ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupItem:
    id: int
    name: str
    description: str
    hosts: int


def list_groups(conn: psycopg.Connection[Any], scope: HostScope = EVERYTHING) -> list[GroupItem]:
    """Every group for a scope of all hosts; otherwise the scope's own groups."""
    where = sql.SQL("TRUE" if scope.all_hosts else "g.id = ANY(%s)")
    params = [] if scope.all_hosts else [sorted(scope.group_ids)]
    rows = conn.execute(
        sql.SQL(
            "SELECT g.id, g.name, g.description, count(hg.host_id) FROM groups g"
            " LEFT JOIN host_groups hg ON hg.group_id = g.id WHERE {w}"
            " GROUP BY g.id ORDER BY g.name"
        ).format(w=where),
        params,
    ).fetchall()
    return [GroupItem(*r) for r in rows]


def create_group(conn: psycopg.Connection[Any], name: str, description: str = "") -> GroupItem:
    try:
        row = conn.execute(
            "INSERT INTO groups (name, description) VALUES (%s, %s) RETURNING id",
            (name, description),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a group named {name!r} exists") from None
    assert row is not None
    return GroupItem(int(row[0]), name, description, 0)


def rename_group(conn: psycopg.Connection[Any], group_id: int, name: str) -> None:
    try:
        updated = conn.execute(
            "UPDATE groups SET name = %s WHERE id = %s", (name, group_id)
        ).rowcount
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a group named {name!r} exists") from None
    if not updated:
        raise NotFound(f"no group {group_id}")


def delete_group(conn: psycopg.Connection[Any], group_id: int) -> None:
    if not conn.execute("DELETE FROM groups WHERE id = %s", (group_id,)).rowcount:
        raise NotFound(f"no group {group_id}")


def assign_hosts(
    conn: psycopg.Connection[Any], group_id: int, host_ids: Sequence[int], member: bool = True
) -> int:
    """Add (or with ``member=False`` remove) hosts to a group; returns rows changed."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM groups WHERE id = %s", (group_id,)).fetchone() is None:
            raise NotFound(f"no group {group_id}")
        if member:
            return conn.execute(
                "INSERT INTO host_groups (host_id, group_id) SELECT id, %s FROM hosts"
                " WHERE id = ANY(%s) ON CONFLICT DO NOTHING",
                (group_id, list(host_ids)),
            ).rowcount
        return conn.execute(
            "DELETE FROM host_groups WHERE group_id = %s AND host_id = ANY(%s)",
            (group_id, list(host_ids)),
        ).rowcount
