"""Report queries on a real database: CSV streamed in pages for 10,000 hosts, daily snapshots
and their backfill from patch history, and scope filtering of every query."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from reports import ComplianceRules, Context, backfill, compliance_pages, take_snapshot
from reports.csv_out import compliance_csv
from reports.model import PAGE, exposure_report, history_report, reboot_report
from storage import Database, HostScope
from storage.reports import ReportFilter, trend

NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)
RULES = ComplianceRules(default_patch_interval_s=3600)


def many_hosts(conn: Any, count: int) -> None:
    conn.execute(
        "INSERT INTO hosts (name, last_patch_poll_at) SELECT 'h' || g, %s"
        " FROM generate_series(1, %s) g",
        (NOW - dt.timedelta(minutes=5), count),
    )


async def test_compliance_csv_of_10000_hosts_is_streamed_in_pages(db: Database) -> None:
    await db.run(many_hosts, 10_000)
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    chunks = [chunk async for chunk in compliance_csv(compliance_pages(ctx, ReportFilter()))]
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert len(rows) == 10_000 and {r["status"] for r in rows} == {"compliant"}
    # the header, then one chunk per page read from the database: never all rows at once
    assert len(chunks) == 1 + 10_000 // PAGE
    assert max(c.count("\r\n") for c in chunks) == PAGE


def two_groups(conn: Any) -> dict[str, int]:
    ids: dict[str, int] = {}
    for group in ("red", "blue"):
        ids[group] = conn.execute(
            "INSERT INTO groups (name) VALUES (%s) RETURNING id", (group,)
        ).fetchone()[0]
        for n in range(2):
            host = conn.execute(
                "INSERT INTO hosts (name, last_patch_poll_at, pending_reboot, created_at)"
                " VALUES (%s, %s, true, %s) RETURNING id",
                (f"{group}{n}", NOW - dt.timedelta(minutes=5), NOW - dt.timedelta(days=30)),
            ).fetchone()[0]
            ids[f"{group}{n}"] = host
            conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (host, ids[group]))
            # critical since 20 days ago, fixed 5 days ago on host 0 of each group
            conn.execute(
                "INSERT INTO host_patches (host_id, name, severity, first_seen_at, resolved_at)"
                " VALUES (%s, 'openssl', 'critical', %s, %s)",
                (host, NOW - dt.timedelta(days=20),
                 NOW - dt.timedelta(days=5) if n == 0 else None),
            )  # fmt: skip
            job = conn.execute(
                "INSERT INTO jobs (kind, schedule, created_by) VALUES ('patch', 'now', 'ops')"
                " RETURNING id"
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO job_hosts (job_id, host_id, state) VALUES (%s, %s, 'failed')",
                (job, host),
            )
    return ids


async def test_every_query_given_a_group_scope_returns_only_that_groups_hosts(
    db: Database,
) -> None:
    ids = await db.run(two_groups)
    red = HostScope(group_ids=frozenset({ids["red"]}))
    ctx = Context(db, red, RULES, NOW)
    names = {h.name async for page in compliance_pages(ctx, ReportFilter()) for h in page}
    assert names == {"red0", "red1"}
    assert {r.host for r in (await history_report(ctx, ReportFilter())).rows} == names
    assert {i.host for i in (await exposure_report(ctx, ReportFilter())).items} == {"red1"}
    assert {i.host for i in (await reboot_report(ctx, ReportFilter())).items} == names
    blue_only = ReportFilter(group="blue")
    assert [h async for page in compliance_pages(ctx, blue_only) for h in page] == []


async def test_backfill_reconstructs_past_days_and_the_trend_sums_hosts_in_scope(
    db: Database,
) -> None:
    ids = await db.run(two_groups)
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    days = await backfill(ctx, 90)
    assert days == 20  # from the first patch seen (20 days ago) up to yesterday
    assert await backfill(ctx, 90) == 0  # only on the first run
    await take_snapshot(ctx, NOW.date())
    points = {p.day: p for p in await db.run(trend, HostScope.everything(), ReportFilter())}
    # 7 days after first seen the critical patch is past its SLA on every host ...
    day_10 = points[(NOW - dt.timedelta(days=10)).date()]
    assert (day_10.hosts, day_10.noncompliant, day_10.backfilled) == (4, 4, True)
    # ... until it was fixed on host 0 of each group five days ago
    today = points[NOW.date()]
    assert (today.compliant, today.noncompliant, today.backfilled) == (2, 2, False)
    # the fleet rows and the sums of the host rows tell the same trend
    both = HostScope(group_ids=frozenset({ids["red"], ids["blue"]}))
    assert await db.run(trend, both, ReportFilter()) == list(points.values())
    red = HostScope(group_ids=frozenset({ids["red"]}))
    red_today = [p for p in await db.run(trend, red, ReportFilter()) if p.day == NOW.date()]
    assert (red_today[0].hosts, red_today[0].compliant) == (2, 1)


def list_job(conn: Any) -> None:
    host = conn.execute("INSERT INTO hosts (name) VALUES ('web1') RETURNING id").fetchone()[0]
    job = conn.execute(
        "INSERT INTO jobs (kind, selection, packages, schedule, created_by)"
        """ VALUES ('install', 'list', '["curl", {"name": "nginx", "version": "1.24"}]',"""
        " 'now', 'ops') RETURNING id"
    ).fetchone()[0]
    conn.execute("INSERT INTO job_hosts (job_id, host_id) VALUES (%s, %s)", (job, host))


async def test_patch_history_names_the_packages_of_a_list_job_given_as_names_or_specs(
    db: Database,
) -> None:
    await db.run(list_job)
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    rows = (await history_report(ctx, ReportFilter())).rows
    assert [r.packages for r in rows] == ["curl nginx=1.24"]


def odd_severities(conn: Any) -> None:
    host = conn.execute(
        "INSERT INTO hosts (name, last_patch_poll_at) VALUES ('odd', %s) RETURNING id",
        (NOW - dt.timedelta(minutes=5),),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO host_patches (host_id, name, severity, cve_ids, first_seen_at, resolved_at)"
        " VALUES (%s, 'fixed', 'important', '{}', %s, %s),"
        " (%s, 'open', 'moderate', '{CVE-2026-0002}', %s, NULL),"
        " (%s, 'late', 'high', '{}', %s, NULL)",
        (host, NOW - dt.timedelta(days=3), NOW - dt.timedelta(days=1),
         host, NOW - dt.timedelta(days=2), host, NOW - dt.timedelta(days=40)),
    )  # fmt: skip


async def test_a_non_standard_severity_counts_as_medium_in_mttr_and_exposure(
    db: Database,
) -> None:
    await db.run(odd_severities)
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    mttr = {r.severity: r for r in (await history_report(ctx, ReportFilter())).remediation}
    assert (mttr["medium"].resolved, mttr["medium"].mean_hours) == (1, 48.0)
    exposed = await exposure_report(ctx, ReportFilter(severity="medium"))
    assert [(i.package, i.severity) for i in exposed.items] == [
        ("late", "high"),
        ("open", "medium"),
    ]


async def test_the_severity_filter_limits_counted_patches_and_mttr_to_that_severity_and_above(
    db: Database,
) -> None:
    await db.run(odd_severities)
    ctx = Context(db, HostScope.everything(), RULES, NOW)
    every = [h async for page in compliance_pages(ctx, ReportFilter()) for h in page]
    assert [h.status for h in every] == ["noncompliant"]  # 'late' (high) is past its SLA
    critical = ReportFilter(severity="critical")
    only = [h async for page in compliance_pages(ctx, critical) for h in page]
    assert [h.status for h in only] == ["compliant"]
    mttr = (await history_report(ctx, critical)).remediation
    assert [r.severity for r in mttr] == ["critical"]


async def test_a_deleted_hosts_snapshots_stay_out_of_another_groups_trend_with_ungrouped_on(
    db: Database,
) -> None:
    ids = await db.run(two_groups)
    await take_snapshot(Context(db, HostScope.everything(), RULES, NOW), NOW.date())
    await db.run(lambda conn: conn.execute("DELETE FROM hosts WHERE id = %s", (ids["blue0"],)))
    red_and_ungrouped = HostScope(group_ids=frozenset({ids["red"]}), ungrouped=True)
    [today] = await db.run(trend, red_and_ungrouped, ReportFilter())
    assert (today.hosts, today.compliant, today.noncompliant) == (2, 1, 1)
    [blue] = await db.run(trend, HostScope.everything(), ReportFilter(group="blue"))
    assert blue.hosts == 2  # the deleted host's history stays in its group's trend


def backfill_evidence(conn: Any) -> dict[str, int]:
    """Hosts registered 30 days ago: 'quiet' polled once, five minutes ago, with nothing
    pending; 'late' and 'revoked' with a critical patch first seen 20 days ago, still open;
    'late' waived only today, 'revoked' waived 15 days ago and revoked 2 days ago."""
    ids: dict[str, int] = {}
    for name in ("quiet", "late", "revoked"):
        ids[name] = conn.execute(
            "INSERT INTO hosts (name, last_patch_poll_at, created_at) VALUES (%s, %s, %s)"
            " RETURNING id",
            (name, NOW - dt.timedelta(minutes=5), NOW - dt.timedelta(days=30)),
        ).fetchone()[0]
    for name, created, revoked in (
        ("late", NOW - dt.timedelta(hours=1), None),
        ("revoked", NOW - dt.timedelta(days=15), NOW - dt.timedelta(days=2)),
    ):
        conn.execute(
            "INSERT INTO host_patches (host_id, name, severity, first_seen_at)"
            " VALUES (%s, 'openssl', 'critical', %s)",
            (ids[name], NOW - dt.timedelta(days=20)),
        )
        conn.execute(
            "INSERT INTO risk_waivers (host_id, owner, reason, expires_at, created_at,"
            " revoked_at) VALUES (%s, 'o', 'r', %s, %s, %s)",
            (ids[name], NOW + dt.timedelta(days=30), created, revoked),
        )
    return ids


async def test_backfill_counts_a_host_fresh_only_once_polled_and_waivers_in_their_validity(
    db: Database,
) -> None:
    ids = await db.run(backfill_evidence)
    everything = HostScope.everything()
    await backfill(Context(db, everything, RULES, NOW), 90)
    day_10 = (NOW - dt.timedelta(days=10)).date()
    on_day_10 = {}
    for name, host_id in ids.items():
        points = await db.run(trend, everything, ReportFilter(host_id=host_id))
        [p] = [p for p in points if p.day == day_10]
        on_day_10[name] = (p.compliant, p.noncompliant, p.unknown)
    assert on_day_10 == {
        "quiet": (0, 0, 1),  # no evidence it had been polled by then
        "late": (0, 1, 0),  # today's waiver did not exist then
        "revoked": (1, 0, 0),  # the waiver revoked since was active then
    }


def slow_and_fast(conn: Any) -> None:
    group = conn.execute("INSERT INTO groups (name) VALUES ('slow') RETURNING id").fetchone()[0]
    for name in ("slow1", "fast1"):
        host = conn.execute(
            "INSERT INTO hosts (name, last_patch_poll_at) VALUES (%s, %s) RETURNING id",
            (name, NOW - dt.timedelta(hours=3)),
        ).fetchone()[0]
        if name == "slow1":
            conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (host, group))


async def test_freshness_uses_the_configured_interval_of_the_hosts_name_and_groups(
    db: Database,
) -> None:
    await db.run(slow_and_fast)

    def interval_of(name: str, groups: tuple[str, ...]) -> int | None:
        return 4 * 3600 if "slow" in groups else None  # as settings.effective_policy would

    rules = ComplianceRules(default_patch_interval_s=3600, interval_of=interval_of)
    ctx = Context(db, HostScope.everything(), rules, NOW)
    judged = {
        h.name: h.status async for page in compliance_pages(ctx, ReportFilter()) for h in page
    }
    # polled 3 h ago: within 2 x 4 h for the slow group, past 2 x 1 h by default
    assert judged == {"slow1": "compliant", "fast1": "unknown"}
