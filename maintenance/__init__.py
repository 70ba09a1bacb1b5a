"""Maintenance windows and blackouts: pure occurrence computation shared by the scheduler, the
API and the calendar. Imports nothing of ours."""

from .calendar_grid import CalendarDay, DayPart, Marked, month_bounds, month_grid
from .text import describe
from .windows import (
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

__all__ = [
    "CalendarDay",
    "DayPart",
    "Interval",
    "Marked",
    "Recurrence",
    "ShortMonth",
    "WindowError",
    "WindowRule",
    "describe",
    "merged",
    "month_bounds",
    "month_grid",
    "next_window",
    "occurrences",
    "open_window",
]
