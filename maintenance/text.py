"""Window rules in words (issue 16 point 6): "every Tue and Thu 22:00-02:00 Europe/Berlin",
"the last Sunday of every month 02:00-04:00 UTC" (with an en dash). Pure; the one wording
for pages and API."""

from __future__ import annotations

import datetime as dt

from .windows import Recurrence, ShortMonth, WindowRule

DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}


def joined(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _span(rule: WindowRule) -> str:
    start = rule.start_time.strftime("%H:%M")
    if rule.duration < dt.timedelta(days=1):
        end = (dt.datetime.combine(dt.date(2000, 1, 1), rule.start_time) + rule.duration).time()
        return f"{start}\u2013{end.strftime('%H:%M')}"
    hours = rule.duration // dt.timedelta(hours=1)
    days, hours = divmod(hours, 24)
    length = f"{days} d" + (f" {hours} h" if hours else "")
    return f"{start} for {length}"


def _when(rule: WindowRule) -> str:
    days = sorted(rule.weekdays)
    if rule.recurrence is Recurrence.ONCE:
        return "once on " + rule.start_date.strftime("%a %d %b %Y").replace(" 0", " ")
    if rule.recurrence is Recurrence.DAILY or (
        rule.recurrence is Recurrence.WEEKLY and len(days) == 7
    ):
        return "every day"
    if rule.recurrence is Recurrence.WEEKLY:
        return "every " + joined([DAY_ABBR[d] for d in days])
    if rule.recurrence is Recurrence.MONTHLY_DAY:
        text = f"day {rule.day_of_month} of every month"
        if rule.day_of_month > 28:
            text += (
                " (skipped in shorter months)"
                if rule.short_month is ShortMonth.SKIP
                else " (the last day in shorter months)"
            )
        return text
    ordinal = ORDINALS.get(rule.nth, f"#{rule.nth}")
    return f"the {ordinal} {joined([DAY_NAMES[d] for d in days])} of every month"


def describe(rule: WindowRule, today: dt.date | None = None) -> str:
    """The rule in words: when, the local span and the zone; a recurring rule that has not
    begun by ``today`` says when it starts, and an end date is always said."""
    text = f"{_when(rule)} {_span(rule)} {rule.timezone}"
    recurring = rule.recurrence is not Recurrence.ONCE
    if recurring and today is not None and rule.start_date > today:
        text += f", from {rule.start_date.isoformat()}"
    if recurring and rule.until is not None:
        text += f", until {rule.until.isoformat()}"
    return text
