"""Rollout policy as pure functions (R-4.2 to R-4.4, R-5.3): batches, canary gating, failure
threshold, retry-once-in-window, window gating and the job's roll-up state. No trio, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from maintenance import NO_WINDOW_HORIZON, WindowRule
from storage import (
    FINAL_ROW_STATES,
    NO_DEADLINE,
    WAITING_ROW_STATES,
    Decisions,
    JobHostRow,
    JobRow,
    WindowRow,
)

MAX_ATTEMPTS = 2  # the first try and one automatic retry


def rule_of(row: WindowRow) -> WindowRule:
    return WindowRule.from_columns(row)


# Failures the automatic retry cannot help (the ladder was already walked, the request can
# never be valid, a safety gate) or must not repeat blindly: a reboot without evidence, and
# unclear outcomes (the 3 h deadline, an internal error) after which the agent may still be
# running what was sent — a new request would be a blind resend.
NOT_RETRIED = frozenset(
    {
        "HOST_UNREACHABLE",
        "BAD_PACKAGE_NAME",
        "PACKAGE_DB_NOT_CLEAN",
        "REBOOT_NOT_DETECTED",
        "MANAGER_TIMEOUT",
        "INTERNAL_ERROR",
    }
)


def final_failure(row: JobHostRow, window_open: bool) -> bool:
    return row.state == "failed" and (
        row.attempts >= MAX_ATTEMPTS or not window_open or row.error_code in NOT_RETRIED
    )


NOTHING_PENDING = "NOTHING_PENDING"  # a succeeded row with nothing to do (no request sent)


def roll_up(states: Sequence[str], stopped: bool, nothing: int = 0) -> str | None:
    """The job's final status once every row is final (None while some row is not). A job
    with a cancelled or skipped host is never ``succeeded``; it is ``cancelled`` only when
    somebody cancelled a host and nothing failed — a job whose hosts were all skipped (window
    closed, paused, no window) did not run and is ``failed``. ``nothing``: how many of the
    (succeeded) rows had nothing to do (``NOTHING_PENDING``): they count neither way, so 46
    hosts without a window and 4 with nothing to do is ``failed`` (nothing was sent), and a
    job whose every host had nothing to do is ``succeeded``. The plan predicts the same
    (``web.services.plans.Plan.predicted``)."""
    if not all(s in FINAL_ROW_STATES for s in states):
        return None
    states = list(states)
    for _ in range(min(nothing, states.count("succeeded"))):
        states.remove("succeeded")
    succeeded = states.count("succeeded")
    if succeeded == len(states):
        return "succeeded"
    if succeeded:
        return "partially_failed"
    if states.count("failed") or stopped:
        return "failed"
    if states.count("cancelled"):
        return "cancelled"
    return "failed"


def decide(
    job: JobRow,
    rows: Sequence[JobHostRow],
    window_end: Callable[[int], dt.datetime | None],
    host_blocked: Callable[[int], str],
    now: dt.datetime,
    window_ahead: Callable[[int], bool] = lambda host_id: True,
) -> Decisions:
    """One coordinator pass over a job: permits to write, rows to skip (with the reason), the
    roll-up. ``window_end(host_id)`` is the end of the host's open window occurrence (None when
    closed); ``host_blocked(host_id)`` is why the host cannot run anything now ("" if it can);
    ``window_ahead(host_id)`` says whether the host has an enabled window occurrence open now or
    starting within ``NO_WINDOW_HORIZON`` (a window row of a host without one is skipped with
    ``NO_WINDOW`` instead of waiting forever). Once the job is stopped (failure threshold,
    canary) nothing is retried automatically."""
    apply_now = job.schedule == "now"

    def until(host_id: int) -> dt.datetime | None:
        return NO_DEADLINE if apply_now else window_end(host_id)

    open_until = {r.host_id: until(r.host_id) for r in rows}
    retry = [
        r
        for r in rows
        if r.state == "failed" and not final_failure(r, open_until[r.host_id] is not None)
    ]
    failed = [r for r in rows if final_failure(r, open_until[r.host_id] is not None)]
    waiting = [r for r in rows if r.state in WAITING_ROW_STATES] + retry
    stop = ""
    if job.failure_threshold is not None and len(failed) > job.failure_threshold:
        stop = f"stopped: more than {job.failure_threshold} host(s) failed"
    if job.canary:
        canary_rows = [r for r in rows if r.batch == 0]
        canary_done = all(r.state in FINAL_ROW_STATES and r not in retry for r in canary_rows)
        if canary_done and any(r.state != "succeeded" for r in canary_rows):
            stop = "stopped: the canary batch did not fully succeed"
    if stop:
        retry = []  # a stopped job starts nothing new, retries included
        waiting = [r for r in rows if r.state in WAITING_ROW_STATES]
    permits: list[tuple[int, dt.datetime]] = []
    to_wait: list[int] = []
    skipped: list[tuple[int, str]] = []
    no_window: list[tuple[int, str]] = []
    if stop:
        skipped = [(r.id, stop) for r in waiting]
    else:
        if not apply_now:
            for r in waiting:
                if open_until[r.host_id] is None and not window_ahead(r.host_id):
                    no_window.append(
                        (
                            r.id,
                            "the host has no enabled maintenance window in the next "
                            f"{NO_WINDOW_HORIZON.days} days",
                        )
                    )
            ended = {row_id for row_id, _ in no_window}
            waiting = [r for r in waiting if r.id not in ended]
        unfinished = [r for r in rows if r.state not in FINAL_ROW_STATES or r in retry]
        current = min((r.batch for r in unfinished), default=None)
        for r in waiting:
            if r.batch != current:
                continue
            blocked = host_blocked(r.host_id)
            end = open_until[r.host_id]
            permitted = r.state == "queued" and r.run_until is not None
            if apply_now and blocked:
                skipped.append((r.id, blocked))
            elif permitted and end is None and r not in retry:
                # Its window closed before the host ran it: it ends here, with the reason.
                why = blocked or "the host did not start it in time (busy or unreachable)"
                skipped.append((r.id, f"the maintenance window closed: {why}"))
            elif end is not None and end > now:
                if r.run_until != end or r.state != "queued":
                    permits.append((r.id, end))
            elif r.state == "queued":
                to_wait.append(r.id)
    # Roll-up, counting the rows as they will be after these decisions.
    states = {r.id: r.state for r in rows}
    for r in retry:
        states[r.id] = "queued"
    for row_id, _ in [*skipped, *no_window]:
        states[row_id] = "skipped"
    values = list(states.values())
    status = job.status
    finished = False
    nothing = sum(
        1 for r in rows if states[r.id] == "succeeded" and r.error_code == NOTHING_PENDING
    )
    final = roll_up(values, bool(stop), nothing)
    if final is not None:
        status = final
        finished = job.status in ("queued", "running")
    elif permits or any(s not in WAITING_ROW_STATES for s in values):
        status = "running"
    started = status == "running" and job.started_at is None
    return Decisions(
        job.id,
        waiting=tuple(to_wait),
        permits=tuple(permits),
        skipped=tuple(skipped),
        no_window=tuple(no_window),
        retry=tuple(r.id for r in retry),
        status=status if status != job.status else None,
        started=started,
        finished=finished,
    )
