"""Table tests of the one compliance definition (reports.compliance.assess)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from reports import ComplianceRules, HostFacts, PendingPatch, Status, Waiver, assess

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
RULES = ComplianceRules(default_patch_interval_s=3600)
FRESH = NOW - dt.timedelta(minutes=30)


def patch(
    severity: str, age: dt.timedelta, name: str = "openssl", cves: tuple[str, ...] = ()
) -> PendingPatch:
    return PendingPatch(name, severity, NOW - age, cves)


def host(
    *patches: PendingPatch, polled: dt.datetime | None = FRESH, interval: int | None = None
) -> HostFacts:
    return HostFacts(1, polled, interval, tuple(patches))


DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)

OK, BAD, UNKNOWN = Status.COMPLIANT, Status.NONCOMPLIANT, Status.UNKNOWN
HOUR = dt.timedelta(hours=1)

CASES = [
    # (what, facts, expected status)
    ("never polled is unknown, even without patches", host(polled=None), UNKNOWN),
    ("no pending patch and fresh data is compliant", host(), OK),
    ("data exactly 2x the interval old is still fresh", host(polled=NOW - 2 * HOUR), OK),
    ("data a second older than 2x the interval is unknown",
     host(polled=NOW - 2 * HOUR - SECOND), UNKNOWN),
    ("the host's own interval decides freshness",
     host(polled=NOW - 5 * HOUR, interval=3 * 3600), OK),
    ("stale data with an overdue critical patch is unknown",
     host(patch("critical", 30 * DAY), polled=NOW - 3 * DAY), UNKNOWN),
    ("critical pending exactly its SLA is within it", host(patch("critical", 7 * DAY)), OK),
    ("critical pending a second past its SLA breaches",
     host(patch("critical", 7 * DAY + SECOND)), BAD),
    ("high within 30 days is compliant", host(patch("high", 29 * DAY)), OK),
    ("high past 30 days breaches", host(patch("high", 31 * DAY)), BAD),
    ("medium past 90 days breaches", host(patch("medium", 91 * DAY)), BAD),
    ("low past 180 days breaches", host(patch("low", 181 * DAY)), BAD),
    ("an unnamed severity counts as medium", host(patch("weird", 91 * DAY)), BAD),
]  # fmt: skip


@pytest.mark.parametrize(("what", "facts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_compliance_table(what: str, facts: HostFacts, expected: Status) -> None:
    assert assess(facts, RULES, [], NOW).status is expected


def test_patches_below_min_severity_do_not_count() -> None:
    rules = ComplianceRules(min_severity="high", default_patch_interval_s=3600)
    assert assess(host(patch("medium", 400 * DAY)), rules, [], NOW).status is Status.COMPLIANT
    assert assess(host(patch("high", 31 * DAY)), rules, [], NOW).status is Status.NONCOMPLIANT


def test_configured_sla_replaces_the_default() -> None:
    rules = ComplianceRules(sla_days={"critical": 1, "high": 30, "medium": 90, "low": 180})
    facts = host(patch("critical", 2 * DAY), interval=3600)
    assert assess(facts, rules, [], NOW).status is Status.NONCOMPLIANT


def waiver(
    expires: dt.datetime, package: str = "openssl", cve: str = "", host_id: int = 1
) -> Waiver:
    return Waiver(7, host_id, package, cve, expires)


def test_active_waiver_makes_the_breach_compliant_and_counts_it_separately() -> None:
    a = assess(host(patch("critical", 10 * DAY)), RULES, [waiver(NOW + DAY)], NOW)
    assert a.status is Status.COMPLIANT
    assert [b.waiver_id for b in a.waived] == [7] and a.breaches == ()
    assert a.label == "compliant with 1 waived patch"


def test_waiver_expiring_at_this_instant_no_longer_counts() -> None:
    a = assess(host(patch("critical", 10 * DAY)), RULES, [waiver(NOW)], NOW)
    assert a.status is Status.NONCOMPLIANT and a.waived == ()


def test_waiver_a_second_before_expiry_still_counts() -> None:
    a = assess(host(patch("critical", 10 * DAY)), RULES, [waiver(NOW + SECOND)], NOW)
    assert a.status is Status.COMPLIANT


def test_waiver_for_another_host_or_package_does_not_cover() -> None:
    facts = host(patch("critical", 10 * DAY))
    for w in (waiver(NOW + DAY, host_id=2), waiver(NOW + DAY, package="bash")):
        assert assess(facts, RULES, [w], NOW).status is Status.NONCOMPLIANT


def test_waiver_by_cve_covers_the_patch_naming_it() -> None:
    facts = host(patch("critical", 10 * DAY, cves=("CVE-2026-1",)))
    ok = waiver(NOW + DAY, package="", cve="CVE-2026-1")
    other = waiver(NOW + DAY, package="", cve="CVE-2026-2")
    assert assess(facts, RULES, [ok], NOW).status is Status.COMPLIANT
    assert assess(facts, RULES, [other], NOW).status is Status.NONCOMPLIANT


def test_time_zones_compare_as_instants() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first_seen = (NOW - 7 * DAY).astimezone(berlin)  # exactly the SLA, written in another zone
    facts = host(PendingPatch("openssl", "critical", first_seen), polled=FRESH.astimezone(berlin))
    assert assess(facts, RULES, [], NOW).status is Status.COMPLIANT
    later = NOW.astimezone(ZoneInfo("America/New_York")) + SECOND
    assert assess(facts, RULES, [], later).status is Status.NONCOMPLIANT


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        assess(host(), RULES, [], NOW.replace(tzinfo=None))
