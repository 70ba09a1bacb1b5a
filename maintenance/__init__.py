"""Maintenance windows and blackouts: pure occurrence computation shared by the scheduler, the
API and the calendar. Imports nothing of ours."""

from .calendar_grid import CalendarDay, DayPart, Marked, month_bounds, month_grid
from .plan import (
    NO_WINDOW_HORIZON,
    Pending,
    assign_batches,
    chosen,
    downgrade_refusal,
    drift,
    is_downgrade,
    package_manager,
)
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
    "NO_WINDOW_HORIZON",
    "CalendarDay",
    "DayPart",
    "Interval",
    "Marked",
    "Pending",
    "Recurrence",
    "ShortMonth",
    "WindowError",
    "WindowRule",
    "assign_batches",
    "chosen",
    "describe",
    "downgrade_refusal",
    "drift",
    "is_downgrade",
    "merged",
    "month_bounds",
    "month_grid",
    "next_window",
    "occurrences",
    "open_window",
    "package_manager",
]
