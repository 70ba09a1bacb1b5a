"""The deployment plan's window search (``web.services.plans.host_windows``): every host's
window occurrence for a job over N hosts, each with its own weekly window and its group's,
with B blackouts spread over two years (a few within the 35-day horizon), in 10 batches.

    .venv/bin/python benchmarks/plan.py --hosts 2500 --blackouts 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time

from maintenance import Interval, Recurrence, WindowRule, assign_batches
from web.services.plans import host_windows


def fleet(
    hosts: int, blackouts: int, now: dt.datetime
) -> tuple[list[list[int]], dict[int, WindowRule], list[Interval]]:
    rnd = random.Random(16)
    rules: dict[int, WindowRule] = {}
    for group in range(10):  # window ids 1..10: one per group
        rules[group + 1] = WindowRule(
            Recurrence.WEEKLY, dt.date(2026, 1, 1), dt.time(22, 0), dt.timedelta(hours=4),
            "Europe/Berlin", frozenset({group % 7}),
        )  # fmt: skip
    members = []
    for index in range(hosts):  # each host: its group's window and its own
        own = 100 + index
        rules[own] = WindowRule(
            Recurrence.WEEKLY, dt.date(2026, 1, 1), dt.time(rnd.randrange(24), 0),
            dt.timedelta(hours=2), "UTC", frozenset({rnd.randrange(7)}),
        )  # fmt: skip
        members.append([index % 10 + 1, own])
    shut = []
    for _ in range(blackouts):
        start = now + dt.timedelta(hours=rnd.randrange(-365 * 24, 365 * 24))
        shut.append(Interval(start, start + dt.timedelta(hours=rnd.randrange(1, 48))))
    return members, rules, shut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--blackouts", type=int, default=50)
    args = parser.parse_args()
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    members, rules, shut = fleet(args.hosts, args.blackouts, now)
    numbers = assign_batches(args.hosts, batch_size=None, batch_percent=10, canary=False)
    started = time.perf_counter()
    found = host_windows(members, numbers, [False] * args.hosts, rules, shut, now)
    took = time.perf_counter() - started
    placed = sum(1 for w in found if w is not None)
    print(f"{args.hosts} hosts, {args.blackouts} blackouts, 10 batches: {took:.2f} s"
          f" ({placed} hosts placed in a window)")  # fmt: skip


if __name__ == "__main__":
    main()
