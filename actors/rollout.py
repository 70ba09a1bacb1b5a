"""Rollout policy as pure functions (R-4.2 to R-4.4, R-5.3): batches, canary gating, failure
threshold, retry-once-in-window, window gating and the job's roll-up state. No trio, no I/O."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from maintenance import WindowRule
from storage import FINAL_ROW_STATES, WAITING_ROW_STATES, Decisions, JobHostRow, JobRow, WindowRow

MAX_ATTEMPTS = 2  # the first try and one automatic retry


def assign_batches(
    count: int, *, batch_size: int | None, batch_percent: int | None, canary: bool
) -> list[int]:
    """The batch number of each of ``count`` hosts, in order."""
    if count <= 0:
        return []
    size = count
    if batch_size:
        size = batch_size
    elif batch_percent:
        size = max(1, math.ceil(count * batch_percent / 100))
    batches: list[int] = []
    if canary and size >= count:
        size = max(1, count // 10) if count > 1 else 1  # a canary of ~10 % by default
        first = size
        rest = count - first
        return [0] * first + [1] * rest
    for index in range(count):
        batches.append(index // size)
    return batches


def rule_of(row: WindowRow) -> WindowRule:
    return WindowRule.from_columns(row)


def final_failure(row: JobHostRow, window_open: bool) -> bool:
    return row.state == "failed" and (row.attempts >= MAX_ATTEMPTS or not window_open)


def decide(
    job: JobRow, rows: Sequence[JobHostRow], window_open: Callable[[int], bool]
) -> tuple[Decisions, list[JobHostRow]]:
    """One coordinator pass over a job: what changes, and which rows to start now."""
    open_now = {r.host_id: job.schedule == "now" or window_open(r.host_id) for r in rows}
    retry = [r for r in rows if r.state == "failed" and not final_failure(r, open_now[r.host_id])]
    failed = [r for r in rows if final_failure(r, open_now[r.host_id])]
    waiting = [r for r in rows if r.state in WAITING_ROW_STATES] + retry
    stop = job.failure_threshold is not None and len(failed) > job.failure_threshold
    if job.canary:
        canary_rows = [r for r in rows if r.batch == 0]
        canary_done = all(r.state in FINAL_ROW_STATES and r not in retry for r in canary_rows)
        if canary_done and any(r.state != "succeeded" for r in canary_rows):
            stop = True  # the canary batch must fully succeed before the rest
    starts: list[JobHostRow] = []
    to_wait: list[int] = []
    skipped: list[int] = []
    if stop:
        skipped = [r.id for r in waiting if r not in retry]
    else:
        unfinished = [r for r in rows if r.state not in FINAL_ROW_STATES or r in retry]
        current = min((r.batch for r in unfinished), default=None)
        for r in waiting:
            if r.batch != current:
                continue
            if open_now[r.host_id]:
                starts.append(r)
            elif r.state == "queued":
                to_wait.append(r.id)
    # Roll-up, counting the rows as they will be after these decisions.
    states = {r.id: r.state for r in rows}
    for r in retry:
        states[r.id] = "queued"
    for row_id in skipped:
        states[row_id] = "skipped"
    values = list(states.values())
    status = job.status
    finished = False
    if all(s in FINAL_ROW_STATES for s in values):
        succeeded = values.count("succeeded")
        failures = values.count("failed")
        if succeeded == len(values):
            status = "succeeded"
        elif succeeded and (failures or stop):
            status = "partially_failed"
        elif failures:
            status = "failed"
        elif succeeded:
            status = "succeeded"  # the rest was skipped with nothing to do
        else:
            status = "cancelled"
        finished = job.status in ("queued", "running")
    elif starts or any(s not in WAITING_ROW_STATES for s in values):
        status = "running"
    started = status == "running" and job.started_at is None
    decisions = Decisions(
        job.id,
        waiting=tuple(to_wait),
        skipped=tuple(skipped),
        retry=tuple(r.id for r in retry),
        status=status if status != job.status else None,
        started=started,
        finished=finished,
    )
    return decisions, starts
