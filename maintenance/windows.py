"""Maintenance windows and blackouts (R-5.1, R-5.2): one pure function computes occurrences for
the scheduler, the API and the calendar. No trio, no I/O.

Times: a window starts at a local wall-clock time in its IANA zone and lasts ``duration``
(absolute time, so a 4-hour window across a DST change is still 4 hours). A local start time
that does not exist (spring forward) starts at the equivalent instant after the gap; one that
exists twice (fall back) starts at the first. Windows may cross midnight.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC


class Recurrence(enum.Enum):
    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY_DAY = "monthly_day"  # day 1..31 of every month
    MONTHLY_NTH = "monthly_nth"  # "first Tuesday", "last Friday"


class ShortMonth(enum.Enum):
    CLAMP = "clamp"  # day 31 in April → April 30
    SKIP = "skip"  # day 31 in April → no window that month


class WindowError(ValueError):
    """A window rule that cannot be used; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class WindowRule:
    recurrence: Recurrence
    start_date: dt.date  # the date of a one-time window, or the first day a rule applies
    start_time: dt.time
    duration: dt.timedelta
    timezone: str
    weekdays: frozenset[int] = frozenset()  # 0 = Monday … 6 = Sunday (weekly, monthly_nth)
    day_of_month: int = 1  # monthly_day
    short_month: ShortMonth = ShortMonth.CLAMP
    nth: int = 1  # monthly_nth: 1..5, or -1 for the last
    until: dt.date | None = None

    @classmethod
    def from_columns(cls, row: object) -> WindowRule:
        """Build from anything with the stored window's attribute names (a database row)."""
        get = row.__getattribute__
        return cls(
            recurrence=Recurrence(get("recurrence")),
            start_date=get("start_date"),
            start_time=get("start_time"),
            duration=dt.timedelta(minutes=get("duration_minutes")),
            timezone=get("timezone"),
            weekdays=frozenset(get("weekdays")),
            day_of_month=get("day_of_month"),
            short_month=ShortMonth(get("short_month")),
            nth=get("nth"),
            until=get("until"),
        )

    def problems(self) -> dict[str, str]:
        """Every field that is wrong, with the reason (empty when the rule is usable)."""
        found: dict[str, str] = {}
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found["timezone"] = f"unknown IANA time zone {self.timezone!r}"
        if not dt.timedelta(minutes=1) <= self.duration <= dt.timedelta(days=7):
            found["duration"] = "must be between 1 minute and 7 days"
        needs_days = self.recurrence in (Recurrence.WEEKLY, Recurrence.MONTHLY_NTH)
        if needs_days and (not self.weekdays or not self.weekdays <= set(range(7))):
            found["weekdays"] = "choose at least one weekday"
        if self.recurrence is Recurrence.MONTHLY_DAY and not 1 <= self.day_of_month <= 31:
            found["day_of_month"] = "must be between 1 and 31"
        if self.recurrence is Recurrence.MONTHLY_NTH and self.nth not in (1, 2, 3, 4, 5, -1):
            found["nth"] = "must be 1 to 5, or -1 for the last"
        if self.until is not None and self.until < self.start_date:
            found["until"] = "must not be before the start date"
        return found

    def validate(self) -> WindowRule:
        """Return self, or raise ``WindowError`` for the first problem."""
        for field, message in self.problems().items():
            raise WindowError(field, message)
        return self


@dataclass(frozen=True, order=True)
class Interval:
    start: dt.datetime  # aware, UTC
    end: dt.datetime

    def contains(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


def _local_start(day: dt.date, rule: WindowRule, zone: ZoneInfo) -> dt.datetime:
    naive = dt.datetime.combine(day, rule.start_time)
    local = naive.replace(tzinfo=zone)
    # Round-trip through UTC: a time inside a spring-forward gap comes back moved forward.
    return local.astimezone(UTC)


def _days(rule: WindowRule, first: dt.date, last: dt.date) -> Iterable[dt.date]:
    """Candidate local dates on which the rule starts a window, between first and last."""
    start = max(first, rule.start_date)
    end = min(last, rule.until) if rule.until else last
    if rule.recurrence is Recurrence.ONCE:
        if first <= rule.start_date <= last:
            yield rule.start_date
        return
    day = start
    while day <= end:
        if _starts_on(rule, day):
            yield day
        day += dt.timedelta(days=1)


def _starts_on(rule: WindowRule, day: dt.date) -> bool:
    if rule.recurrence is Recurrence.DAILY:
        return True
    if rule.recurrence is Recurrence.WEEKLY:
        return day.weekday() in rule.weekdays
    if rule.recurrence is Recurrence.MONTHLY_DAY:
        length = calendar.monthrange(day.year, day.month)[1]
        target = rule.day_of_month
        if target > length:
            target = 0 if rule.short_month is ShortMonth.SKIP else length
        return day.day == target
    return day.weekday() in rule.weekdays and _is_nth(day, rule.nth)


def _is_nth(day: dt.date, nth: int) -> bool:
    if nth == -1:
        return (day + dt.timedelta(days=7)).month != day.month
    return (day.day - 1) // 7 + 1 == nth


def _subtract(interval: Interval, blackouts: Sequence[Interval]) -> list[Interval]:
    pieces = [interval]
    for black in blackouts:
        next_pieces = []
        for piece in pieces:
            if black.end <= piece.start or black.start >= piece.end:
                next_pieces.append(piece)
                continue
            if piece.start < black.start:
                next_pieces.append(Interval(piece.start, black.start))
            if black.end < piece.end:
                next_pieces.append(Interval(black.end, piece.end))
        pieces = next_pieces
    return pieces


def occurrences(
    rule: WindowRule,
    start: dt.datetime,
    end: dt.datetime,
    blackouts: Sequence[Interval] = (),
) -> list[Interval]:
    """Every part of a window of ``rule`` that overlaps [start, end), in UTC, with blackout
    periods cut out. ``start`` and ``end`` must be aware datetimes."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    zone = ZoneInfo(rule.timezone)
    # A window that started before ``start`` may still be open: look back by its duration.
    first = (start - rule.duration).astimezone(zone).date() - dt.timedelta(days=1)
    last = end.astimezone(zone).date() + dt.timedelta(days=1)
    found: list[Interval] = []
    for day in _days(rule, first, last):
        begin = _local_start(day, rule, zone)
        window = Interval(begin, begin + rule.duration)
        if window.end <= start or window.start >= end:
            continue
        pieces = _subtract(window, sorted(blackouts))
        # A blackout can leave a piece that no longer overlaps the range asked for.
        found.extend(p for p in pieces if p.end > start and p.start < end)
    return sorted(found)


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of intervals (a host with several windows, from itself and its groups)."""
    result: list[Interval] = []
    for interval in sorted(intervals):
        if result and interval.start <= result[-1].end:
            last = result[-1]
            result[-1] = Interval(last.start, max(last.end, interval.end))
        else:
            result.append(interval)
    return result


def open_window(
    rules: Iterable[WindowRule], now: dt.datetime, blackouts: Sequence[Interval] = ()
) -> Interval | None:
    """The window (union of all rules) that contains ``now``, or None."""
    candidates = merged(
        piece
        for rule in rules
        for piece in occurrences(
            rule, now - rule.duration, now + dt.timedelta(seconds=1), blackouts
        )  # fmt: skip
    )
    return next((w for w in candidates if w.contains(now)), None)


def next_window(
    rules: Iterable[WindowRule],
    now: dt.datetime,
    blackouts: Sequence[Interval] = (),
    horizon: dt.timedelta = dt.timedelta(days=62),
) -> Interval | None:
    """The first window (union of all rules) that starts after ``now``, within ``horizon``."""
    upcoming = merged(
        piece for rule in rules for piece in occurrences(rule, now, now + horizon, blackouts)
    )
    return next((w for w in upcoming if w.start > now), None)
