"""SQL for reports: compliance inputs, patch history, exposure, reboots, daily snapshots, risk
waivers and report definitions. Every query takes a ``HostScope``; lists are read in pages by
id (keyset) so a caller can stream 10,000 hosts without holding them all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .errors import NotFound
from .retention import history_scope
from .scope import HostScope, scope_condition


@dataclass(frozen=True)
class ReportFilter:
    """Date range (inclusive days, UTC), group name, host id and lowest severity."""

    since: dt.date | None = None
    until: dt.date | None = None
    group: str = ""
    host_id: int | None = None
    severity: str = ""


@dataclass(frozen=True)
class OpenPatch:
    name: str
    severity: str
    first_seen_at: dt.datetime
    cve_ids: tuple[str, ...]
    available_version: str


@dataclass(frozen=True)
class HostFactsRow:
    id: int
    name: str
    groups: tuple[str, ...]
    health: str
    last_patch_poll_at: dt.datetime | None
    pending_reboot: bool
    last_boot_at: dt.datetime | None
    pending: int  # every pending patch
    patches: tuple[OpenPatch, ...]  # the pending patches first seen before their cutoff
    display_name: str = ""  # as every page names the host: its display name, else its name
    address: str = ""  # shown beside it


@dataclass(frozen=True)
class HistoryRow:
    row_id: int
    job_id: int
    kind: str
    created_by: str
    host_id: int
    host: str
    state: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: float | None
    packages: str
    error_code: str
    error_message: str
    address: str = ""  # ``host`` is the display name (else the name); the address beside it


@dataclass(frozen=True)
class Remediation:
    severity: str
    resolved: int
    mean_hours: float | None


@dataclass(frozen=True)
class ExposureRow:
    patch_id: int
    host_id: int
    host: str
    package: str
    severity: str
    cve_ids: tuple[str, ...]
    first_seen_at: dt.datetime
    address: str = ""  # ``host`` is the display name (else the name); the address beside it


@dataclass(frozen=True)
class SnapshotCounts:
    subject: str
    subject_id: int
    hosts: int
    compliant: int
    noncompliant: int
    unknown: int
    waived: int
    group_ids: tuple[int, ...] = ()  # a host row: the host's groups that day


@dataclass(frozen=True)
class TrendPoint:
    day: dt.date
    hosts: int
    compliant: int
    noncompliant: int
    unknown: int
    waived: int
    backfilled: bool


@dataclass(frozen=True)
class WaiverRow:
    id: int
    host_id: int
    host: str
    package: str
    cve: str
    owner: str
    reason: str
    expires_at: dt.datetime
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_by: str
    address: str = ""  # ``host`` is the display name (else the name); the address beside it


@dataclass(frozen=True)
class ReportDefinition:
    id: int
    name: str
    report: str
    format: str
    filters: dict[str, Any]
    recipients: tuple[str, ...]
    schedule: str
    created_by: str
    created_at: dt.datetime


_SEVERITIES = ("critical", "high", "medium", "low")


def severity_sql(column: str) -> sql.Composable:
    """``column``'s severity as the reports read it: one of ``_SEVERITIES``; any other value
    (an agent's own name such as 'important') counts as medium, as in ``reports.compliance``."""
    return sql.SQL(
        "(CASE WHEN {c} IN ('critical', 'high', 'medium', 'low') THEN {c} ELSE 'medium' END)"
    ).format(c=sql.SQL(column))


def _at_or_above(severity: str) -> list[str]:
    """The severities at or above ``severity`` ('' = every severity)."""
    if severity not in _SEVERITIES:
        return list(_SEVERITIES)
    return list(_SEVERITIES[: _SEVERITIES.index(severity) + 1])


def _host_conditions(
    scope: HostScope, f: ReportFilter, column: str, *, history: bool = False
) -> list[sql.Composable]:
    """``history``: ``column`` may name a removed host (its history is kept until retention
    removes it), judged by the groups it was in when removed."""
    where: list[sql.Composable] = [
        history_scope(scope, column) if history else scope_condition(scope, column)
    ]
    if f.group:
        removed = (
            " OR EXISTS (SELECT 1 FROM removed_hosts frh JOIN groups frg"
            " ON frg.id = ANY(frh.group_ids) WHERE frh.id = {c} AND frg.name = {g})"
            if history
            else ""
        )
        where.append(
            sql.SQL(
                "(EXISTS (SELECT 1 FROM host_groups fg JOIN groups fgn ON fgn.id = fg.group_id"
                " WHERE fg.host_id = {c} AND fgn.name = {g})" + removed + ")"
            ).format(c=sql.SQL(column), g=sql.Literal(f.group))
        )
    if f.host_id is not None:
        where.append(sql.SQL("{} = {}").format(sql.SQL(column), sql.Literal(f.host_id)))
    return where


# How every page names a host (its display name, else its registered name) and its address as
# text, for a row ``h`` of hosts or known_hosts.
SHOWN_NAME = "COALESCE(NULLIF(h.display_name, ''), h.name)"
SHOWN_ADDRESS = "COALESCE(host(h.address), '')"
# The host list's order: the stored natural key of the shown name (migration 0021), the address.
HOST_ORDER = "h.name_key, h.address, h.id"


def host_labels(
    conn: psycopg.Connection[Any], host_ids: Sequence[int]
) -> dict[int, tuple[str, str]]:
    """host id → (shown name, address) of the hosts among ``host_ids`` that still exist."""
    if not host_ids:
        return {}
    rows = conn.execute(
        "SELECT h.id, " + SHOWN_NAME + ", " + SHOWN_ADDRESS + " FROM hosts h WHERE h.id = ANY(%s)",
        (list(host_ids),),
    ).fetchall()
    return {int(r[0]): (r[1], r[2]) for r in rows}


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _ts(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# -- compliance inputs -------------------------------------------------------------------------


def host_order(conn: psycopg.Connection[Any], scope: HostScope, f: ReportFilter) -> list[int]:
    """The ids of the hosts in scope matching ``f`` in the natural order of their shown names
    (the stored ``hosts.name_key``; then address and id, as the host list). One query: the
    pages then read hosts by id."""
    query = sql.SQL("SELECT h.id FROM hosts h WHERE {} ORDER BY " + HOST_ORDER).format(
        sql.SQL(" AND ").join(_host_conditions(scope, f, "h.id"))
    )
    return [int(r[0]) for r in conn.execute(query)]


def host_facts_page(
    conn: psycopg.Connection[Any],
    scope: HostScope,
    f: ReportFilter,
    host_ids: Sequence[int],
    cutoffs: Mapping[str, dt.datetime] | None = None,
) -> list[HostFactsRow]:
    """The hosts of ``host_ids`` (in that order; those still in scope and matching ``f``) with
    their open patches; with ``cutoffs`` (severity → instant; others use medium's) only the
    patches first seen before their severity's cutoff (those past an SLA: the only ones that
    can change a verdict)."""
    where = _host_conditions(scope, f, "h.id")
    overdue: sql.Composable = sql.SQL("TRUE")
    if cutoffs is not None:
        overdue = sql.SQL(
            "p.first_seen_at < CASE p.severity WHEN 'critical' THEN {} WHEN 'high' THEN {}"
            " WHEN 'low' THEN {} ELSE {} END"
        ).format(*(sql.Literal(cutoffs[s]) for s in ("critical", "high", "low", "medium")))
    query = sql.SQL(
        "SELECT h.id, h.name, COALESCE((SELECT array_agg(g.name ORDER BY g.name)"
        " FROM host_groups hg JOIN groups g ON g.id = hg.group_id WHERE hg.host_id = h.id),"
        " '{{}}'), h.health, h.last_patch_poll_at, h.pending_reboot, h.last_boot_at,"
        " h.pending_patches,"
        " COALESCE((SELECT json_agg(json_build_array(p.name, p.severity, p.first_seen_at,"
        " p.cve_ids, p.available_version) ORDER BY p.name) FROM host_patches p"
        " WHERE p.host_id = h.id AND p.resolved_at IS NULL AND {}), '[]'::json),"
        " " + SHOWN_NAME + ", " + SHOWN_ADDRESS + ""
        " FROM unnest({}::bigint[]) WITH ORDINALITY AS o(id, n) JOIN hosts h ON h.id = o.id"
        " WHERE {} ORDER BY o.n"
    ).format(overdue, sql.Literal(list(host_ids)), sql.SQL(" AND ").join(where))
    out = []
    for r in conn.execute(query).fetchall():
        patches = tuple(OpenPatch(p[0], p[1], _ts(p[2]), tuple(p[3]), p[4]) for p in r[8])
        out.append(
            HostFactsRow(
                r[0], r[1], tuple(r[2]), r[3], r[4], r[5], r[6], r[7], patches, r[9], r[10]
            )  # fmt: skip
        )
    return out


def pending_by_severity(
    conn: psycopg.Connection[Any], scope: HostScope, f: ReportFilter
) -> dict[str, int]:
    """Open patches per severity on the hosts in scope matching ``f``."""
    where = _host_conditions(scope, f, "p.host_id")
    where.append(sql.SQL("p.resolved_at IS NULL"))
    rows = conn.execute(
        sql.SQL("SELECT p.severity, count(*) FROM host_patches p WHERE {} GROUP BY 1").format(
            sql.SQL(" AND ").join(where)
        )
    ).fetchall()
    counts = dict.fromkeys(_SEVERITIES, 0)
    for severity, n in rows:
        key = severity if severity in counts else "medium"
        counts[key] += n
    return counts


@dataclass(frozen=True)
class PastHost:
    id: int
    name: str
    groups: tuple[str, ...]  # group names today
    first_polled_at: dt.datetime | None
    patches: list[OpenPatch]


def patches_open_at(
    conn: psycopg.Connection[Any], scope: HostScope, at: dt.datetime
) -> list[PastHost]:
    """Every host created by ``at`` with the patches that were open then (reconstructed from
    the patch episodes), and the first instant it is known to have been polled (its first
    patch seen, or its last poll), for backfilled snapshots."""
    rows = conn.execute(
        sql.SQL(
            "SELECT h.id, h.name, COALESCE((SELECT array_agg(g.name ORDER BY g.name)"
            " FROM host_groups hg JOIN groups g ON g.id = hg.group_id WHERE hg.host_id = h.id),"
            " '{{}}'), LEAST(h.last_patch_poll_at, (SELECT min(e.first_seen_at)"
            " FROM host_patches e WHERE e.host_id = h.id)),"
            " COALESCE((SELECT json_agg(json_build_array(p.name, p.severity, p.first_seen_at,"
            " p.cve_ids, p.available_version))"
            " FROM host_patches p WHERE p.host_id = h.id AND p.first_seen_at <= {at}"
            " AND (p.resolved_at IS NULL OR p.resolved_at > {at})), '[]'::json)"
            " FROM hosts h WHERE h.created_at <= {at} AND {scope} ORDER BY h.id"
        ).format(at=sql.Literal(at), scope=scope_condition(scope, "h.id"))
    ).fetchall()
    return [
        PastHost(
            r[0],
            r[1],
            tuple(r[2]),
            r[3],
            [OpenPatch(p[0], p[1], _ts(p[2]), tuple(p[3]), p[4]) for p in r[4]],
        )  # fmt: skip
        for r in rows
    ]


def host_memberships(conn: psycopg.Connection[Any]) -> dict[int, list[int]]:
    """host id → its group ids."""
    out: dict[int, list[int]] = {}
    for host_id, group_id in conn.execute("SELECT host_id, group_id FROM host_groups"):
        out.setdefault(host_id, []).append(group_id)
    return out


# -- patch history -----------------------------------------------------------------------------


def history_page(
    conn: psycopg.Connection[Any],
    scope: HostScope,
    f: ReportFilter,
    after_id: int = 0,
    limit: int = 1000,
) -> list[HistoryRow]:
    """Job rows (one per job and host) created in the filter's date range, by row id."""
    where = _host_conditions(scope, f, "jh.host_id", history=True)
    where.append(sql.SQL("jh.id > {}").format(sql.Literal(after_id)))
    if f.since:
        where.append(sql.SQL("j.created_at >= {}").format(sql.Literal(_day_start(f.since))))
    if f.until:
        end = _day_start(f.until + dt.timedelta(days=1))
        where.append(sql.SQL("j.created_at < {}").format(sql.Literal(end)))
    query = sql.SQL(
        "SELECT jh.id, j.id, j.kind, j.created_by, h.id, " + SHOWN_NAME + ", jh.state,"
        " jh.started_at,"
        " jh.finished_at, EXTRACT(EPOCH FROM jh.finished_at - COALESCE(jh.started_at,"
        " jh.dispatched_at, jh.sent_at))::float8, CASE WHEN j.selection = 'list'"
        " THEN (SELECT string_agg(CASE jsonb_typeof(x) WHEN 'string' THEN x #>> '{{}}'"
        " ELSE concat_ws('=', x->>'name', NULLIF(x->>'version', '')) END, ' ' ORDER BY n)"
        " FROM jsonb_array_elements(j.packages) WITH ORDINALITY AS e(x, n))"
        " ELSE j.selection END, jh.error_code, jh.error_message, " + SHOWN_ADDRESS + ""
        " FROM job_hosts jh JOIN jobs j ON j.id = jh.job_id"
        " JOIN known_hosts h ON h.id = jh.host_id"
        " WHERE {} ORDER BY jh.id LIMIT {}"
    ).format(sql.SQL(" AND ").join(where), sql.Literal(limit))
    return [
        HistoryRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10] or "",
            r[11],
            r[12],
            r[13],
        )  # fmt: skip
        for r in conn.execute(query)
    ]


def remediation_times(
    conn: psycopg.Connection[Any], scope: HostScope, f: ReportFilter
) -> list[Remediation]:
    """Patches resolved in the range, per severity: how many and the mean time from first
    seen to resolved (mean time to remediate)."""
    where = _host_conditions(scope, f, "p.host_id", history=True)
    where.append(sql.SQL("p.resolved_at IS NOT NULL"))
    if f.since:
        where.append(sql.SQL("p.resolved_at >= {}").format(sql.Literal(_day_start(f.since))))
    if f.until:
        end = _day_start(f.until + dt.timedelta(days=1))
        where.append(sql.SQL("p.resolved_at < {}").format(sql.Literal(end)))
    shown = _at_or_above(f.severity)
    where.append(sql.SQL("{} = ANY({})").format(severity_sql("p.severity"), sql.Literal(shown)))
    rows = conn.execute(
        sql.SQL(
            "SELECT {}, count(*), avg(EXTRACT(EPOCH FROM p.resolved_at -"
            " p.first_seen_at))::float8 / 3600 FROM host_patches p WHERE {} GROUP BY 1"
        ).format(severity_sql("p.severity"), sql.SQL(" AND ").join(where))
    ).fetchall()
    found = {r[0]: Remediation(r[0], r[1], r[2]) for r in rows}
    return [found.get(s, Remediation(s, 0, None)) for s in shown]


# -- exposure and reboots ----------------------------------------------------------------------


def exposure_page(
    conn: psycopg.Connection[Any],
    scope: HostScope,
    f: ReportFilter,
    after_id: int = 0,
    limit: int = 1000,
) -> list[ExposureRow]:
    """Open security patches (critical or high, or naming a CVE) at or above the filter's
    severity, by patch id (the report orders them; ``host_order`` gives the hosts' order)."""
    where = _host_conditions(scope, f, "p.host_id")
    where += [
        sql.SQL("p.resolved_at IS NULL"),
        sql.SQL("p.id > {}").format(sql.Literal(after_id)),
        sql.SQL("(p.severity IN ('critical', 'high') OR cardinality(p.cve_ids) > 0)"),
        sql.SQL("{} = ANY({})").format(
            severity_sql("p.severity"), sql.Literal(_at_or_above(f.severity))
        ),
    ]
    columns = f"p.id, h.id, {SHOWN_NAME}, p.name, {{}}, p.cve_ids, p.first_seen_at, {SHOWN_ADDRESS}"
    query = sql.SQL(
        "SELECT " + columns + " FROM host_patches p JOIN hosts h ON h.id = p.host_id"
        " WHERE {} ORDER BY p.id LIMIT {}"
    ).format(severity_sql("p.severity"), sql.SQL(" AND ").join(where), sql.Literal(limit))
    return [
        ExposureRow(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6], r[7])
        for r in conn.execute(query)
    ]


# -- snapshots ---------------------------------------------------------------------------------


def write_snapshots(
    conn: psycopg.Connection[Any],
    day: dt.date,
    rows: Sequence[SnapshotCounts],
    backfilled: bool = False,
) -> int:
    """Replace ``day``'s snapshot rows with ``rows`` (one transaction)."""
    with conn.transaction():
        conn.execute("DELETE FROM compliance_snapshots WHERE day = %s", (day,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO compliance_snapshots (day, subject, subject_id, hosts, compliant,"
                " noncompliant, unknown, waived, backfilled, group_ids)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        day,
                        r.subject,
                        r.subject_id,
                        r.hosts,
                        r.compliant,
                        r.noncompliant,
                        r.unknown,
                        r.waived,
                        backfilled,
                        list(r.group_ids),
                    )  # fmt: skip
                    for r in rows
                ],
            )
    return len(rows)


def snapshot_days(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(DISTINCT day) FROM compliance_snapshots").fetchone()
    return int(row[0]) if row else 0


def earliest_patch(conn: psycopg.Connection[Any]) -> dt.datetime | None:
    row = conn.execute("SELECT min(first_seen_at) FROM host_patches").fetchone()
    return row[0] if row else None


def _snapshot_conditions(scope: HostScope, f: ReportFilter) -> list[sql.Composable]:
    """``scope`` and ``f`` applied to host snapshot rows by the groups recorded in them (not
    today's memberships: a removed host has none, and would pass for ungrouped)."""
    parts: list[sql.Composable] = []
    if scope.all_hosts:
        parts.append(sql.SQL("TRUE"))
    if scope.group_ids:
        parts.append(sql.SQL("s.group_ids && {}::bigint[]").format(
            sql.Literal(sorted(scope.group_ids))))  # fmt: skip
    if scope.ungrouped:
        parts.append(sql.SQL("cardinality(s.group_ids) = 0"))
    where: list[sql.Composable] = [
        sql.SQL("({})").format(sql.SQL(" OR ").join(parts or [sql.SQL("FALSE")]))
    ]
    if f.group:
        where.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM groups fg WHERE fg.name = {} AND fg.id = ANY(s.group_ids))"
            ).format(sql.Literal(f.group))
        )
    if f.host_id is not None:
        where.append(sql.SQL("s.subject_id = {}").format(sql.Literal(f.host_id)))
    return where


def trend(conn: psycopg.Connection[Any], scope: HostScope, f: ReportFilter) -> list[TrendPoint]:
    """Per day, the sums of the host rows in scope (so groups never count a host twice); for
    the whole fleet unfiltered, the fleet rows (the same sums, written with them)."""
    whole_fleet = scope.all_hosts and not f.group and f.host_id is None
    if whole_fleet:
        where: list[sql.Composable] = [sql.SQL("s.subject = 'fleet' AND s.subject_id = 0")]
        count = sql.SQL("sum(s.hosts)")
    else:
        where = _snapshot_conditions(scope, f)
        where.append(sql.SQL("s.subject = 'host'"))
        count = sql.SQL("count(*)")
    if f.since:
        where.append(sql.SQL("s.day >= {}").format(sql.Literal(f.since)))
    if f.until:
        where.append(sql.SQL("s.day <= {}").format(sql.Literal(f.until)))
    rows = conn.execute(
        sql.SQL(
            "SELECT s.day, {}, sum(s.compliant), sum(s.noncompliant), sum(s.unknown),"
            " sum(s.waived), bool_or(s.backfilled) FROM compliance_snapshots s WHERE {}"
            " GROUP BY s.day ORDER BY s.day"
        ).format(count, sql.SQL(" AND ").join(where))
    ).fetchall()
    return [
        TrendPoint(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6]) for r in rows
    ]


# -- waivers -----------------------------------------------------------------------------------


_WAIVER_COLUMNS = (
    "w.id, w.host_id, " + SHOWN_NAME + ", w.package, w.cve, w.owner, w.reason, w.expires_at,"
    " w.created_by, w.created_at, w.revoked_at, w.revoked_by, " + SHOWN_ADDRESS
)


def waivers_version(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    """Changes whenever a waiver is recorded or revoked (for caches of computed figures)."""
    row = conn.execute(
        "SELECT count(*), COALESCE(max(id), 0), count(revoked_at) FROM risk_waivers"
    ).fetchone()
    return tuple(int(v) for v in row) if row else ()


def list_waivers(
    conn: psycopg.Connection[Any], scope: HostScope, include_revoked: bool = True
) -> list[WaiverRow]:
    # A removed host's waivers stay (history): named through known_hosts, scoped by the groups
    # it was in (history_scope).
    where: list[sql.Composable] = [history_scope(scope, "w.host_id")]
    if not include_revoked:
        where.append(sql.SQL("w.revoked_at IS NULL"))
    query = sql.SQL(
        "SELECT " + _WAIVER_COLUMNS + " FROM risk_waivers w JOIN known_hosts h ON h.id = w.host_id"
        " WHERE {} ORDER BY w.expires_at, w.id"
    ).format(sql.SQL(" AND ").join(where))
    return [WaiverRow(*r) for r in conn.execute(query)]


def create_waiver(
    conn: psycopg.Connection[Any],
    scope: HostScope,
    host_id: int,
    package: str,
    cve: str,
    owner: str,
    reason: str,
    expires_at: dt.datetime,
    created_by: str,
) -> int:
    """Raises ``NotFound`` when the host does not exist or is outside ``scope``."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO risk_waivers (host_id, package, cve, owner, reason, expires_at,"
            " created_by) SELECT h.id, {}, {}, {}, {}, {}, {} FROM hosts h"
            " WHERE h.id = {} AND {} RETURNING id"
        ).format(
            *(sql.Literal(v) for v in (package, cve, owner, reason, expires_at, created_by)),
            sql.Literal(host_id),
            scope_condition(scope, "h.id"),
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"no host with id {host_id}")
    return int(row[0])


def pending_covered(conn: psycopg.Connection[Any], host_id: int, package: str, cve: str) -> int:
    """How many open patches on ``host_id`` a waiver for ``package`` / ``cve`` (empty: any)
    would cover now."""
    row = conn.execute(
        "SELECT count(*) FROM host_patches p WHERE p.host_id = %s AND p.resolved_at IS NULL"
        " AND (%s = '' OR p.name = %s) AND (%s = '' OR %s = ANY(p.cve_ids))",
        (host_id, package, package, cve, cve),
    ).fetchone()
    return int(row[0]) if row else 0


def revoke_waiver(
    conn: psycopg.Connection[Any], scope: HostScope, waiver_id: int, revoked_by: str
) -> None:
    """Raises ``NotFound`` when there is no active waiver ``waiver_id`` in ``scope``."""
    row = conn.execute(
        sql.SQL(
            "UPDATE risk_waivers w SET revoked_at = now(), revoked_by = {} WHERE w.id = {}"
            " AND w.revoked_at IS NULL AND {} RETURNING w.id"
        ).format(
            sql.Literal(revoked_by), sql.Literal(waiver_id), scope_condition(scope, "w.host_id")
        )
    ).fetchone()
    if row is None:
        raise NotFound(f"no active waiver with id {waiver_id}")


# -- report definitions ------------------------------------------------------------------------


def save_definition(
    conn: psycopg.Connection[Any],
    name: str,
    report: str,
    format: str,
    filters: dict[str, Any],
    recipients: Sequence[str],
    schedule: str,
    created_by: str,
) -> int:
    row = conn.execute(
        "INSERT INTO report_definitions (name, report, format, filters, recipients, schedule,"
        " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (name, report, format, Jsonb(filters), list(recipients), schedule, created_by),
    ).fetchone()
    assert row is not None
    return int(row[0])


def list_definitions(
    conn: psycopg.Connection[Any], owner: str | None = None, definition_id: int | None = None
) -> list[ReportDefinition]:
    """The definitions created by ``owner`` (``None``: everybody's), optionally only one."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    if owner is not None:
        where.append(sql.SQL("created_by = {}").format(sql.Literal(owner)))
    if definition_id is not None:
        where.append(sql.SQL("id = {}").format(sql.Literal(definition_id)))
    rows = conn.execute(
        sql.SQL(
            "SELECT id, name, report, format, filters, recipients, schedule, created_by,"
            " created_at FROM report_definitions WHERE {} ORDER BY id"
        ).format(sql.SQL(" AND ").join(where))
    ).fetchall()
    return [
        ReportDefinition(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6], r[7], r[8]) for r in rows
    ]


def get_definition(
    conn: psycopg.Connection[Any], definition_id: int, owner: str | None = None
) -> ReportDefinition:
    """Raises ``NotFound`` when there is no such definition created by ``owner``."""
    for d in list_definitions(conn, owner, definition_id):
        return d
    raise NotFound(f"no report definition with id {definition_id}")


def delete_definition(
    conn: psycopg.Connection[Any], definition_id: int, owner: str | None = None
) -> None:
    """Raises ``NotFound`` when there is no such definition created by ``owner``."""
    row = conn.execute(
        "DELETE FROM report_definitions WHERE id = %s AND (%s::text IS NULL OR created_by = %s)"
        " RETURNING id",
        (definition_id, owner, owner),
    ).fetchone()
    if row is None:
        raise NotFound(f"no report definition with id {definition_id}")
