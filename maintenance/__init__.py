"""Maintenance windows and blackouts: pure occurrence computation shared by the scheduler, the
API and the calendar. Imports nothing of ours."""

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
    "Interval",
    "Recurrence",
    "ShortMonth",
    "WindowError",
    "WindowRule",
    "merged",
    "next_window",
    "occurrences",
    "open_window",
]
