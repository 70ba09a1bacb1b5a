"""The plan's window search (``plans.host_windows``, r5/J point 4) gives what the union of each
host's windows through ``open_window`` / ``next_window`` gives, with occurrences computed once
per window instead of per host."""

from __future__ import annotations

import datetime as dt
import random

from maintenance import (
    NO_WINDOW_HORIZON,
    Interval,
    Recurrence,
    WindowRule,
    assign_batches,
    next_window,
    open_window,
)
from web.services.plans import host_windows

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def reference(
    members: list[list[int]],
    numbers: list[int],
    rules: dict[int, WindowRule],
    shut: list[Interval],
) -> list[Interval | None]:
    result: list[Interval | None] = []
    after, latest = NOW, NOW
    for number in sorted(set(numbers)):
        for index, batch in enumerate(numbers):
            if batch == number:
                chosen = [rules[w] for w in members[index]]
                found = open_window(chosen, after, shut) or next_window(
                    chosen, after, shut, NO_WINDOW_HORIZON
                )
                result.append(found)
                if found is not None:
                    latest = max(latest, found.start)
        after = latest
    return result


def test_host_windows_match_open_then_next_window_with_blackouts_and_batches() -> None:
    rnd = random.Random(5)
    rules = {
        i: WindowRule(
            Recurrence.WEEKLY,
            dt.date(2026, 1, 1),
            dt.time(rnd.randrange(24), 30),
            dt.timedelta(minutes=rnd.choice((30, 120, 600, 3000))),
            rnd.choice(("UTC", "Europe/Berlin", "America/New_York")),
            frozenset(rnd.sample(range(7), rnd.randrange(1, 3))),
        )  # fmt: skip
        for i in range(1, 41)
    }
    rules[99] = WindowRule(  # a one-time window long past: no occurrence at all
        Recurrence.ONCE, dt.date(2020, 1, 1), dt.time(1, 0), dt.timedelta(hours=1), "UTC"
    )
    members = [rnd.sample(sorted(rules), rnd.randrange(1, 4)) for _ in range(120)]
    members.append([99])
    shut = []
    for _ in range(80):
        start = NOW + dt.timedelta(hours=rnd.randrange(-24 * 30, 24 * 60))
        shut.append(Interval(start, start + dt.timedelta(hours=rnd.randrange(1, 72))))
    numbers = assign_batches(len(members), batch_size=None, batch_percent=25, canary=False)
    found = host_windows(members, numbers, [False] * len(members), rules, shut, NOW)
    assert found == reference(members, numbers, rules, shut)
    assert found[-1] is None
    assert sum(w is not None for w in found) > 100
