"""The occurrence function: table tests for the hard cases and a property test."""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance import (
    Interval,
    Recurrence,
    ShortMonth,
    WindowError,
    WindowRule,
    merged,
    next_window,
    occurrences,
    open_window,
)

UTC = dt.UTC


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def rule(recurrence: Recurrence = Recurrence.DAILY, **kw: object) -> WindowRule:
    base: dict[str, object] = dict(
        recurrence=recurrence,
        start_date=dt.date(2026, 1, 1),
        start_time=dt.time(22, 0),
        duration=dt.timedelta(hours=4),
        timezone="UTC",
    )
    base.update(kw)
    return WindowRule(**base).validate()  # type: ignore[arg-type]


def starts(r: WindowRule, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    return [i.start for i in occurrences(r, start, end)]


def test_window_crossing_midnight() -> None:
    r = rule()
    found = occurrences(r, utc(2026, 3, 10), utc(2026, 3, 11))
    # The window of the 9th (22:00-02:00) is still open at the start of the 10th.
    assert found == [
        Interval(utc(2026, 3, 9, 22), utc(2026, 3, 10, 2)),
        Interval(utc(2026, 3, 10, 22), utc(2026, 3, 11, 2)),
    ]
    assert open_window([r], utc(2026, 3, 10, 1, 30)) == found[0]
    assert open_window([r], utc(2026, 3, 10, 2, 0)) is None


def test_dst_spring_forward_and_fall_back() -> None:
    ny = ZoneInfo("America/New_York")
    r = rule(start_time=dt.time(2, 30), duration=dt.timedelta(hours=1), timezone="America/New_York")
    # 2026-03-08: 02:30 does not exist in New York; the window starts at 03:30 EDT (07:30 UTC).
    spring = occurrences(r, utc(2026, 3, 8, 0), utc(2026, 3, 8, 23))
    assert [i.start for i in spring] == [utc(2026, 3, 8, 7, 30)]
    assert spring[0].start.astimezone(ny).hour == 3
    # 2026-11-01: 02:30 happens once (after fall-back at 02:00 → 01:00); 01:30 twice.
    r2 = rule(
        start_time=dt.time(1, 30), duration=dt.timedelta(hours=1), timezone="America/New_York"
    )
    fall = occurrences(r2, utc(2026, 11, 1, 0), utc(2026, 11, 1, 23))
    assert [i.start for i in fall] == [utc(2026, 11, 1, 5, 30)]  # the first 01:30 (EDT)
    # Durations are absolute: still one hour long across the change.
    assert all(i.end - i.start == dt.timedelta(hours=1) for i in spring + fall)
    # The day before and after keep their local start time.
    days = starts(r2, utc(2026, 10, 31), utc(2026, 11, 3))
    assert [d.astimezone(ny).time() for d in days] == [dt.time(1, 30)] * 3


def test_day_31_in_short_months_clamped_or_skipped() -> None:
    clamp = rule(Recurrence.MONTHLY_DAY, day_of_month=31, start_time=dt.time(3, 0))
    skip = rule(
        Recurrence.MONTHLY_DAY,
        day_of_month=31,
        start_time=dt.time(3, 0),
        short_month=ShortMonth.SKIP,
    )
    span = (utc(2026, 1, 1), utc(2026, 7, 1))
    assert [d.date() for d in starts(clamp, *span)] == [
        dt.date(2026, 1, 31),
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 31),
        dt.date(2026, 4, 30),
        dt.date(2026, 5, 31),
        dt.date(2026, 6, 30),
    ]
    assert [d.date() for d in starts(skip, *span)] == [
        dt.date(2026, 1, 31),
        dt.date(2026, 3, 31),
        dt.date(2026, 5, 31),
    ]


def test_day_29_in_leap_and_common_years() -> None:
    r = rule(
        Recurrence.MONTHLY_DAY,
        day_of_month=29,
        short_month=ShortMonth.SKIP,
        start_date=dt.date(2027, 1, 1),
    )
    assert dt.date(2028, 2, 29) in [d.date() for d in starts(r, utc(2028, 2, 1), utc(2028, 3, 1))]
    assert starts(r, utc(2027, 2, 1), utc(2027, 3, 1)) == []


def test_weekly_and_nth_weekday() -> None:
    weekly = rule(Recurrence.WEEKLY, weekdays=frozenset({1, 3}))  # Tuesday, Thursday
    days = [d.date() for d in starts(weekly, utc(2026, 6, 1), utc(2026, 6, 8))]
    assert days == [dt.date(2026, 6, 2), dt.date(2026, 6, 4)]
    first_tuesday = rule(Recurrence.MONTHLY_NTH, weekdays=frozenset({1}), nth=1)
    assert [d.date() for d in starts(first_tuesday, utc(2026, 6, 1), utc(2026, 8, 31))] == [
        dt.date(2026, 6, 2),
        dt.date(2026, 7, 7),
        dt.date(2026, 8, 4),
    ]
    last_friday = rule(Recurrence.MONTHLY_NTH, weekdays=frozenset({4}), nth=-1)
    assert [d.date() for d in starts(last_friday, utc(2026, 2, 1), utc(2026, 3, 31))] == [
        dt.date(2026, 2, 27),
        dt.date(2026, 3, 27),
    ]


def test_one_time_and_until() -> None:
    once = rule(Recurrence.ONCE, start_date=dt.date(2026, 5, 5))
    assert starts(once, utc(2026, 1, 1), utc(2027, 1, 1)) == [utc(2026, 5, 5, 22)]
    limited = rule(until=dt.date(2026, 1, 3))
    assert len(starts(limited, utc(2026, 1, 1), utc(2026, 2, 1))) == 3


def test_blackout_never_leaves_a_piece_outside_the_range() -> None:
    # Found by the property test: the window 03:00-09:00 with a blackout from 08:00 on, asked
    # from 08:00, must not return its 03:00-08:00 piece.
    r = rule(Recurrence.ONCE, start_time=dt.time(3, 0), duration=dt.timedelta(hours=6))
    asked = utc(2026, 1, 1, 8)
    freeze = Interval(asked, asked + dt.timedelta(minutes=51))
    found = occurrences(r, asked, asked + dt.timedelta(days=1), [freeze])
    assert found == [Interval(utc(2026, 1, 1, 8, 51), utc(2026, 1, 1, 9))]


def test_blackout_overrides_windows() -> None:
    r = rule()
    freeze = Interval(utc(2026, 3, 10, 23), utc(2026, 3, 12, 0))
    found = occurrences(r, utc(2026, 3, 10), utc(2026, 3, 13), [freeze])
    assert found == [
        Interval(utc(2026, 3, 9, 22), utc(2026, 3, 10, 2)),
        Interval(utc(2026, 3, 10, 22), utc(2026, 3, 10, 23)),
        # the 11th's window is frozen until midnight: only its tail remains
        Interval(utc(2026, 3, 12, 0), utc(2026, 3, 12, 2)),
        Interval(utc(2026, 3, 12, 22), utc(2026, 3, 13, 2)),
    ]


def test_host_in_several_groups_gets_the_union() -> None:
    web = rule(start_time=dt.time(22, 0), duration=dt.timedelta(hours=2))
    db = rule(start_time=dt.time(23, 0), duration=dt.timedelta(hours=2))
    union = merged(
        i for r in (web, db) for i in occurrences(r, utc(2026, 3, 10, 12), utc(2026, 3, 11, 12))
    )
    assert union == [Interval(utc(2026, 3, 10, 22), utc(2026, 3, 11, 1))]
    assert next_window([web, db], utc(2026, 3, 10, 12)) == union[0]


def test_invalid_rules_name_the_field() -> None:
    with pytest.raises(WindowError, match="timezone"):
        rule(timezone="Mars/Olympus")
    with pytest.raises(WindowError, match="weekdays"):
        rule(Recurrence.WEEKLY)
    with pytest.raises(WindowError, match="duration"):
        rule(duration=dt.timedelta(0))
    with pytest.raises(WindowError, match="nth"):
        rule(Recurrence.MONTHLY_NTH, weekdays=frozenset({1}), nth=7)


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
]


@st.composite
def rules(draw: st.DrawFn) -> WindowRule:
    recurrence = draw(st.sampled_from(list(Recurrence)))
    return WindowRule(
        recurrence=recurrence,
        start_date=draw(st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31))),
        start_time=draw(st.times()).replace(microsecond=0, second=0),
        duration=dt.timedelta(minutes=draw(st.integers(1, 48 * 60))),
        timezone=draw(st.sampled_from(ZONES)),
        weekdays=frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
        day_of_month=draw(st.integers(1, 31)),
        short_month=draw(st.sampled_from(list(ShortMonth))),
        nth=draw(st.sampled_from([1, 2, 3, 4, 5, -1])),
    ).validate()


@settings(max_examples=int(os.environ.get("PM_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(
    rules(),
    st.datetimes(dt.datetime(2024, 1, 1), dt.datetime(2027, 12, 1)),
    st.lists(st.tuples(st.integers(0, 60 * 24 * 40), st.integers(1, 60 * 24 * 3)), max_size=3),
)
def test_occurrences_lie_inside_the_rule_and_never_in_a_blackout(
    r: WindowRule, naive: dt.datetime, blacks: list[tuple[int, int]]
) -> None:
    start = naive.replace(tzinfo=UTC)
    end = start + dt.timedelta(days=45)
    blackouts = [
        Interval(start + dt.timedelta(minutes=a), start + dt.timedelta(minutes=a + b))
        for a, b in blacks
    ]
    zone = ZoneInfo(r.timezone)
    plain = occurrences(r, start, end)
    for window in occurrences(r, start, end, blackouts):
        assert window.start < end and window.end > start
        assert window.end > window.start
        assert not any(b.start < window.end and window.start < b.end for b in blackouts)
        # Every piece lies inside one window of the rule computed without blackouts…
        host = next(w for w in plain if w.start <= window.start and window.end <= w.end)
        # …which starts on a day the rule allows, at the rule's local time (or after a gap).
        local = host.start.astimezone(zone)
        assert host.end - host.start == r.duration
        naive_start = dt.datetime.combine(local.date(), r.start_time)
        shifted = naive_start.replace(tzinfo=zone).astimezone(UTC)
        assert shifted == host.start
        if r.recurrence in (Recurrence.WEEKLY, Recurrence.MONTHLY_NTH):
            assert naive_start.date().weekday() in r.weekdays
