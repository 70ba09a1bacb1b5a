"""Daily compliance snapshots (fleet, group, host), judged by the one compliance function, and
the first run's backfill from patch history. Freshness on a past day is an estimate: a host
counts as freshly polled on that day only when it is known to have been polled by then (a patch
first seen, or its last poll, no later than the day's end), otherwise it is unknown; waivers
count on the days they were recorded and not yet revoked or expired."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from storage import HostScope
from storage.reports import (
    ReportFilter,
    SnapshotCounts,
    WaiverRow,
    earliest_patch,
    host_memberships,
    list_waivers,
    patches_open_at,
    snapshot_days,
    write_snapshots,
)

from .compliance import HostFacts, PendingPatch, Status, Waiver, assess
from .model import Context, compliance_pages

_EVERYTHING = HostScope.everything()


def _revoked_by(w: WaiverRow, at: dt.datetime) -> bool:
    return w.revoked_at is not None and w.revoked_at <= at


def roll_up(
    results: Sequence[tuple[int, Status, bool]], memberships: dict[int, list[int]]
) -> list[SnapshotCounts]:
    """Host rows plus the fleet row and one row per group from ``(host, status, waived)``."""
    totals: dict[tuple[str, int], list[int]] = {}

    def add(key: tuple[str, int], status: Status, waived: bool) -> None:
        t = totals.setdefault(key, [0, 0, 0, 0, 0])
        t[0] += 1
        t[{Status.COMPLIANT: 1, Status.NONCOMPLIANT: 2, Status.UNKNOWN: 3}[status]] += 1
        t[4] += int(waived and status is Status.COMPLIANT)

    for host_id, status, waived in results:
        add(("host", host_id), status, waived)
        add(("fleet", 0), status, waived)
        for group_id in memberships.get(host_id, []):
            add(("group", group_id), status, waived)
    out = []
    for (subject, subject_id), counts in sorted(totals.items()):
        groups = tuple(sorted(memberships.get(subject_id, []))) if subject == "host" else ()
        hosts, compliant, noncompliant, unknown, waived_hosts = counts
        out.append(
            SnapshotCounts(
                subject, subject_id, hosts, compliant, noncompliant, unknown, waived_hosts, groups
            )
        )
    return out


async def take_snapshot(ctx: Context, day: dt.date) -> int:
    """Write ``day``'s rows from the hosts' state at ``ctx.now``; returns the number of rows."""
    results: list[tuple[int, Status, bool]] = []
    async for page in compliance_pages(ctx, ReportFilter()):
        results += [(h.host_id, Status(h.status), h.waived > 0) for h in page]
    memberships = await ctx.db.run(host_memberships)
    return await ctx.db.run(write_snapshots, day, roll_up(results, memberships))


async def backfill(ctx: Context, days: int) -> int:
    """On the first run only (no snapshot yet): reconstruct up to ``days`` days before
    ``ctx.now`` from the patch episodes. Returns the number of days written."""
    if days <= 0 or await ctx.db.run(snapshot_days) > 0:
        return 0
    first = await ctx.db.run(earliest_patch)
    if first is None:
        return 0
    every_waiver = await ctx.db.run(list_waivers, _EVERYTHING)
    memberships = await ctx.db.run(host_memberships)
    today = ctx.now.astimezone(dt.UTC).date()
    start = max(first.astimezone(dt.UTC).date(), today - dt.timedelta(days=days))
    written = 0
    day = start
    while day < today:
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        hosts = await ctx.db.run(patches_open_at, _EVERYTHING, end)
        # The waivers recorded by then and not yet revoked (expiry is checked by ``assess``).
        waivers = [
            Waiver(w.id, w.host_id, w.package, w.cve, w.expires_at)
            for w in every_waiver
            if w.created_at <= end and not _revoked_by(w, end)
        ]
        results = []
        for h in hosts:
            polled = h.first_polled_at is not None and h.first_polled_at <= end
            facts = HostFacts(
                h.id,
                end if polled else None,
                ctx.rules.interval_of(h.name, h.groups),
                tuple(
                    PendingPatch(p.name, p.severity, p.first_seen_at, p.cve_ids) for p in h.patches
                ),
            )
            a = assess(facts, ctx.rules, waivers, end)
            results.append((h.id, a.status, bool(a.waived)))
        await ctx.db.run(write_snapshots, day, roll_up(results, memberships), True)
        written += 1
        day += dt.timedelta(days=1)
    return written
