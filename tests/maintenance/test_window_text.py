"""Window rules in words and the month grid of the windows page (issue 16 point 6)."""

from __future__ import annotations

import datetime as dt

from maintenance import (
    DayPart,
    Interval,
    Marked,
    Recurrence,
    ShortMonth,
    WindowRule,
    describe,
    month_grid,
)

UTC = dt.UTC


def rule(recurrence: Recurrence, **kw: object) -> WindowRule:
    values: dict[str, object] = {
        "start_date": dt.date(2026, 1, 1),
        "start_time": dt.time(22, 0),
        "duration": dt.timedelta(hours=4),
        "timezone": "Europe/Berlin",
    }
    values.update(kw)
    return WindowRule(recurrence, **values)  # type: ignore[arg-type]


def test_weekly_rule_names_its_weekdays_not_their_numbers() -> None:
    text = describe(rule(Recurrence.WEEKLY, weekdays=frozenset({1, 3})))
    assert text == "every Tue and Thu 22:00\u201302:00 Europe/Berlin"
    three = describe(rule(Recurrence.WEEKLY, weekdays=frozenset({0, 2, 4})))
    assert three.startswith("every Mon, Wed and Fri ")
    assert describe(rule(Recurrence.WEEKLY, weekdays=frozenset(range(7)))).startswith("every day")


def test_last_weekday_of_the_month_is_said_as_such() -> None:
    text = describe(
        rule(
            Recurrence.MONTHLY_NTH,
            nth=-1,
            weekdays=frozenset({6}),
            start_time=dt.time(2, 0),
            duration=dt.timedelta(hours=2),
            timezone="UTC",
        )
    )
    assert text == "the last Sunday of every month 02:00\u201304:00 UTC"
    assert describe(rule(Recurrence.MONTHLY_NTH, nth=2, weekdays=frozenset({1}))).startswith(
        "the second Tuesday of every month"
    )


def test_monthly_day_says_what_happens_in_shorter_months() -> None:
    assert describe(rule(Recurrence.MONTHLY_DAY, day_of_month=15)).startswith(
        "day 15 of every month 22:00"
    )
    clamp = describe(rule(Recurrence.MONTHLY_DAY, day_of_month=31))
    assert "(the last day in shorter months)" in clamp
    skip = describe(rule(Recurrence.MONTHLY_DAY, day_of_month=31, short_month=ShortMonth.SKIP))
    assert "(skipped in shorter months)" in skip


def test_once_daily_long_windows_start_and_end_dates_in_words() -> None:
    once = rule(Recurrence.ONCE, start_date=dt.date(2026, 12, 1), duration=dt.timedelta(hours=1))
    assert describe(once) == "once on Tue 1 Dec 2026 22:00\u201323:00 Europe/Berlin"
    long = rule(Recurrence.DAILY, duration=dt.timedelta(hours=50), timezone="UTC")
    assert describe(long) == "every day 22:00 for 2 d 2 h UTC"
    later = rule(Recurrence.DAILY, start_date=dt.date(2026, 3, 1), until=dt.date(2026, 4, 1))
    assert describe(later, today=dt.date(2026, 2, 1)).endswith(
        ", from 2026-03-01, until 2026-04-01"
    )
    assert ", from" not in describe(later, today=dt.date(2026, 3, 2))


def at(day: int, hour: int) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, tzinfo=UTC)


def test_month_grid_has_whole_weeks_and_splits_intervals_at_midnight() -> None:
    windows = [Marked("db", Interval(at(1, 22), at(2, 2)))]
    blackouts = [Marked("freeze", Interval(at(24, 0), at(27, 0)))]
    weeks = month_grid(2026, 12, windows, blackouts)
    days = [d for week in weeks for d in week]
    assert all(len(week) == 7 for week in weeks)
    assert days[0].date == dt.date(2026, 11, 30) and not days[0].in_month  # a Monday
    assert days[-1].date == dt.date(2027, 1, 3) and not days[-1].in_month
    by_date = {d.date: d for d in days}
    assert by_date[dt.date(2026, 12, 1)].windows == (DayPart("db", "22:00", "24:00"),)
    assert by_date[dt.date(2026, 12, 2)].windows == (DayPart("db", "00:00", "02:00"),)
    assert by_date[dt.date(2026, 12, 3)].windows == ()
    frozen = [d.date.day for d in days if d.blackouts]
    assert frozen == [24, 25, 26]
