"""Pure parts of the executor: which agent job a request in ``request_sent`` created."""

from __future__ import annotations

import datetime as dt
import uuid

from actors.agent_records import JobInfo, JobOperation, JobStatus
from actors.execution import pick_sent_job

T0 = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
PATCH = JobOperation.PATCH_APPLY


def jid(name: str) -> str:
    """A well-formed agent job id standing for ``name``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def job(
    job_id: str, seconds: float, op: JobOperation = PATCH, packages: tuple[str, ...] = ()
) -> JobInfo:
    return JobInfo(
        jid(job_id),
        op,
        JobStatus.COMPLETED,
        T0 + dt.timedelta(seconds=seconds),
        None,
        packages,
        None,
    )


def test_the_previous_attempts_job_is_never_adopted() -> None:
    jobs = [job("previous", 0), job("real", 5)]
    assert pick_sent_job(jobs, PATCH, [], known={jid("previous")}) == jid("real")


def test_the_newest_unrecorded_job_wins_and_older_ones_than_known_jobs_are_ignored() -> None:
    # "stray" predates a job this host's rows account for (agent clock): not ours.
    jobs = [job("stray", 0), job("known", 10), job("a", 20), job("b", 30)]
    assert pick_sent_job(jobs, PATCH, [], known={jid("known")}) == jid("b")


def test_operation_and_packages_must_match() -> None:
    jobs = [
        job("install", 5, JobOperation.INSTALL, ("openssl=3.0.2",)),
        job("other", 6, PATCH, ("curl",)),
        job("ours", 4, PATCH, ("openssl", "libssl3")),
    ]
    assert pick_sent_job(jobs, PATCH, ["libssl3", "openssl"], known=set()) == jid("ours")
    assert pick_sent_job(jobs, JobOperation.INSTALL, ["openssl"], known=set()) == jid("install")
    assert pick_sent_job(jobs, JobOperation.REBOOT, [], known=set()) is None


def test_nothing_found_means_the_request_never_arrived() -> None:
    assert pick_sent_job([job("known", 0)], PATCH, [], known={jid("known")}) is None
    assert pick_sent_job([], PATCH, [], known=set()) is None


def test_a_listed_job_with_a_malformed_id_is_never_adopted() -> None:
    bad = JobInfo("../../x", PATCH, JobStatus.COMPLETED, T0, None, (), None)
    assert pick_sent_job([bad], PATCH, [], known=set()) is None
