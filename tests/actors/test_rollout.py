"""The rollout policy (``actors.rollout``) as pure functions: which rows are retried, skipped
or given permits, and the job's roll-up."""

from __future__ import annotations

import datetime as dt

import pytest

from actors.rollout import decide, roll_up
from storage import JobHostRow, JobRow
from web.services.plans import HostPlan, Plan

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
END = NOW + dt.timedelta(hours=1)


def job(schedule: str = "now", threshold: int | None = None, canary: bool = False) -> JobRow:
    return JobRow(
        1, "patch", "all", (), schedule, False, 0, None, None, threshold, canary, "running",
        None, "", NOW, NOW, None,
    )  # fmt: skip


def row(row_id: int, state: str, attempts: int = 1, code: str = "", batch: int = 0) -> JobHostRow:
    return JobHostRow(
        row_id, 1, row_id, batch, state, attempts, None, None, None, None, 0, code, "", "",
        run_until=END if state == "failed" else None,
    )  # fmt: skip


def open_all(host_id: int) -> dt.datetime | None:
    return END


def test_a_row_that_hit_the_manager_deadline_is_not_retried_automatically() -> None:
    d = decide(job(), [row(1, "failed", code="MANAGER_TIMEOUT")], open_all, lambda h: "", NOW)
    assert d.retry == () and d.status == "failed"


def test_an_internal_error_is_not_retried_automatically() -> None:
    d = decide(job(), [row(1, "failed", code="INTERNAL_ERROR")], open_all, lambda h: "", NOW)
    assert d.retry == () and d.status == "failed"


def test_the_failure_threshold_stops_automatic_retries_too() -> None:
    rows = [
        row(1, "failed", attempts=2, code="TIMEOUT"),  # a final failure: over the threshold 0
        row(2, "failed", attempts=1, code="TIMEOUT"),  # would be retried
        row(3, "queued", batch=1),
    ]
    d = decide(job(threshold=0), rows, open_all, lambda h: "", NOW)
    assert d.retry == ()
    assert [r for r, _ in d.skipped] == [3]
    assert d.status == "failed"


def test_a_failed_canary_stops_automatic_retries_of_the_canary_batch() -> None:
    rows = [
        row(1, "failed", attempts=2, code="TIMEOUT"),  # the canary failed for good
        row(2, "failed", attempts=1, code="TIMEOUT", batch=1),
        row(3, "queued", batch=1),
    ]
    d = decide(job(canary=True), rows, open_all, lambda h: "", NOW)
    assert d.retry == () and [r for r, _ in d.skipped] == [3]


def test_failed_rows_are_still_retried_once_while_the_job_runs() -> None:
    d = decide(job(), [row(1, "failed", code="TIMEOUT")], open_all, lambda h: "", NOW)
    assert d.retry == (1,)


def test_a_window_row_of_a_host_without_any_window_ahead_is_skipped_no_window() -> None:
    rows = [row(1, "waiting_window"), row(2, "waiting_window")]
    d = decide(job(schedule="window"), rows, lambda h: None, lambda h: "", NOW, lambda h: h == 2)
    assert [r for r, _ in d.no_window] == [1]
    assert "no enabled maintenance window" in d.no_window[0][1]
    assert d.skipped == () and d.waiting == ()


def test_a_window_row_whose_window_is_ahead_keeps_waiting() -> None:
    d = decide(
        job(schedule="window"), [row(1, "queued")], lambda h: None, lambda h: "", NOW,
        lambda h: True,
    )  # fmt: skip
    assert d.no_window == () and d.waiting == (1,)


def test_a_job_whose_hosts_were_all_skipped_is_failed_not_cancelled() -> None:
    assert roll_up(["skipped", "skipped"], stopped=False) == "failed"
    assert roll_up(["skipped", "cancelled"], stopped=False) == "cancelled"
    assert roll_up(["cancelled"], stopped=False) == "cancelled"
    assert roll_up(["succeeded", "skipped"], stopped=False) == "partially_failed"


def test_rows_with_nothing_to_do_count_neither_way_in_the_roll_up() -> None:
    # 46 hosts without a window and 4 with nothing to do: nothing was sent, the job failed.
    assert roll_up(["skipped"] * 46 + ["succeeded"] * 4, stopped=False, nothing=4) == "failed"
    assert roll_up(["succeeded"] * 3, stopped=False, nothing=3) == "succeeded"
    assert roll_up(["succeeded", "succeeded", "skipped"], False, nothing=1) == "partially_failed"
    assert roll_up(["succeeded", "failed"], stopped=False, nothing=1) == "failed"
    rows = [row(1, "succeeded", code="NOTHING_PENDING"), row(2, "skipped", code="NO_WINDOW")]
    assert decide(job(), rows, open_all, lambda h: "", NOW).status == "failed"


@pytest.mark.parametrize(
    "codes",
    [
        ("NO_WINDOW",) * 46 + ("NOTHING_PENDING",) * 4,
        ("NOTHING_PENDING", "NOTHING_PENDING"),
        ("", "NOTHING_PENDING", "PAUSED"),
        ("", "NOTHING_PENDING"),
        ("PAUSED", "NO_WINDOW"),
        ("", ""),
    ],
)
def test_the_plans_predicted_status_is_the_roll_up_of_its_rows_when_every_run_succeeds(
    codes: tuple[str, ...],
) -> None:
    hosts = [HostPlan(i, f"h{i}", "", 0, skip=code) for i, code in enumerate(codes)]
    plan = Plan(hosts, [], 0, 0, sum(1 for c in codes if c))
    states = ["skipped" if c in ("PAUSED", "NO_WINDOW") else "succeeded" for c in codes]
    assert plan.predicted() == roll_up(states, False, nothing=codes.count("NOTHING_PENDING"))
