"""A month as a calendar grid (weeks Monday to Sunday) with the window occurrences and blackout
periods that touch each day, in a time zone (the user's; UTC by default): each day runs from
its local midnight to the next (23 or 25 hours on a daylight-saving change), and the times shown
are local (issue 16 point 6). Pure; the page renders it."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from .windows import Interval

UTC = dt.UTC


@dataclass(frozen=True)
class Marked:
    """Something shown on the calendar: a window occurrence or a blackout period."""

    label: str
    interval: Interval


@dataclass(frozen=True)
class DayPart:
    """The part of a marked interval that falls on one day (``start``/``end`` as HH:MM; an end
    of ``24:00`` means it runs past midnight)."""

    label: str
    start: str
    end: str
    # the part's instants (UTC), for the UTC on hover; not part of what the day shows
    start_at: dt.datetime | None = field(default=None, compare=False)
    end_at: dt.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CalendarDay:
    date: dt.date
    in_month: bool
    windows: tuple[DayPart, ...]
    blackouts: tuple[DayPart, ...]


def month_bounds(year: int, month: int, zone: dt.tzinfo = UTC) -> tuple[dt.datetime, dt.datetime]:
    """The instants from the first Monday shown to the end of the last Sunday shown (local
    midnights in ``zone``)."""
    first = dt.date(year, month, 1)
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    start = first - dt.timedelta(days=first.weekday())
    end = last + dt.timedelta(days=6 - last.weekday() + 1)
    return (
        dt.datetime.combine(start, dt.time(), zone),
        dt.datetime.combine(end, dt.time(), zone),
    )


def _parts(items: Sequence[Marked], day: dt.date, zone: dt.tzinfo) -> tuple[DayPart, ...]:
    # In UTC: datetimes sharing one tzinfo compare by wall time, wrong across a DST change.
    begin = dt.datetime.combine(day, dt.time(), zone).astimezone(UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone).astimezone(UTC)
    found = []
    for item in sorted(items, key=lambda m: (m.interval.start, m.label)):
        if item.interval.end <= begin or item.interval.start >= end:
            continue
        start = max(item.interval.start, begin)
        stop = min(item.interval.end, end)
        found.append(
            DayPart(
                item.label,
                start.astimezone(zone).strftime("%H:%M"),
                "24:00" if stop == end else stop.astimezone(zone).strftime("%H:%M"),
                start,
                stop,
            )
        )
    return tuple(found)


def month_grid(
    year: int,
    month: int,
    windows: Sequence[Marked],
    blackouts: Sequence[Marked],
    zone: dt.tzinfo = UTC,
) -> list[list[CalendarDay]]:
    """Weeks (Monday first) covering the month; days of the neighbouring months are included
    with ``in_month`` false so that every week has seven days."""
    start, end = month_bounds(year, month, zone)
    weeks: list[list[CalendarDay]] = []
    day = start.date()
    while day < end.date():
        if day.weekday() == 0:
            weeks.append([])
        weeks[-1].append(
            CalendarDay(
                day, day.month == month, _parts(windows, day, zone), _parts(blackouts, day, zone)
            )
        )
        day += dt.timedelta(days=1)
    return weeks
