"""The pure parsers: liberal where the agent is inconsistent, strict where guessing is unsafe."""

from __future__ import annotations

import datetime as dt

import pytest

from actors.agent_client import check_package_name, check_version
from actors.agent_records import (
    JobOperation,
    JobStatus,
    PackageStatus,
    parse_error_code,
    parse_health,
    parse_job,
    parse_job_accepted,
    parse_job_status,
    parse_jobs,
    parse_operation,
    parse_package_status,
    parse_patches,
    parse_time,
    parse_ws_message,
)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("timedout", JobStatus.TIMED_OUT),
        ("timed_out", JobStatus.TIMED_OUT),
        ("timeout", JobStatus.TIMED_OUT),
        ("Completed", JobStatus.COMPLETED),
        ("rebooting", JobStatus.REBOOTING),
    ],
)
def test_three_spellings_of_status(text: str, status: JobStatus) -> None:
    assert parse_job_status(text) is status


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown job status"):
        parse_job_status("exploded")


@pytest.mark.parametrize(
    ("text", "operation"),
    [
        ("patchapply", JobOperation.PATCH_APPLY),
        ("patch_apply", JobOperation.PATCH_APPLY),
        ("selfupdate", JobOperation.SELF_UPDATE),
        ("self_update", JobOperation.SELF_UPDATE),
        ("frobnicate", JobOperation.UNKNOWN),
    ],
)
def test_operation_spellings(text: str, operation: JobOperation) -> None:
    assert parse_operation(text) is operation


def test_package_status_is_pascal_case_on_the_wire() -> None:
    assert parse_package_status("NotInstalled") is PackageStatus.NOT_INSTALLED
    assert parse_package_status("Upgradable") is PackageStatus.UPGRADABLE
    assert parse_package_status("weird") is PackageStatus.UNKNOWN


def test_timestamps_with_nanoseconds_and_offsets() -> None:
    parsed = parse_time("2026-07-21T14:03:11.482913517+00:00")
    assert parsed == dt.datetime(2026, 7, 21, 14, 3, 11, 482913, tzinfo=dt.UTC)
    assert parse_time("2026-07-21T14:03:11Z") == dt.datetime(2026, 7, 21, 14, 3, 11, tzinfo=dt.UTC)
    assert parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_unknown_error_codes_become_unknown_error() -> None:
    assert parse_error_code("GPG_ERROR") == "GPG_ERROR"
    assert parse_error_code("SOMETHING_NEW") == "UNKNOWN_ERROR"
    assert parse_error_code(None) is None


def test_patch_apply_acceptance_counts_packages_as_text() -> None:
    accepted = parse_job_accepted(
        {
            "job_id": "0f0e8b6a-6f6e-4f3e-9a51-3a2f7c0b9d11",
            "status": "pending",
            "operation": "patch_apply",
            "packages": ["12 packages"],
            "package": None,
        }
    )
    assert accepted.package_count == 12
    assert accepted.packages == ()
    update = parse_job_accepted(
        {
            "job_id": "0f0e8b6a-6f6e-4f3e-9a51-3a2f7c0b9d11",
            "status": "pending",
            "operation": "update",
            "packages": None,
            "package": "curl",
        }
    )
    assert update.packages == ("curl",)


def test_internal_jobs_are_dropped_and_unknown_fields_ignored() -> None:
    jobs = parse_jobs(
        {
            "jobs": [
                {
                    "job_id": "a",
                    "operation": "install",
                    "status": "running",
                    "packages": ["__health_refresh__"],
                    "created_at": None,
                    "completed_at": None,
                },
                {
                    "job_id": "b",
                    "operation": "patchapply",
                    "status": "failed",
                    "packages": ["x"],
                    "created_at": None,
                    "completed_at": None,
                    "error_code": "NEW_CODE",
                    "shiny": 1,
                },
            ],
            "total": 2,
        }
    )
    assert [j.job_id for j in jobs] == ["b"]
    assert jobs[0].error_code == "UNKNOWN_ERROR"


def test_missing_required_fields_are_errors() -> None:
    with pytest.raises(ValueError, match="status"):
        parse_job({"job_id": "x"})
    with pytest.raises(ValueError, match="patches"):
        parse_patches({"total": 0})
    with pytest.raises(ValueError, match="uptime_seconds"):
        parse_health({"status": "healthy"})


def test_degraded_reasons_from_health_fields() -> None:
    health = parse_health(
        {
            "status": "degraded",
            "uptime_seconds": 5,
            "crl_status": "expired",
            "gpg_key_status": "valid",
            "repo_config_synced": False,
        }
    )
    assert health.degraded_reasons == ("CRL expired", "repository configuration not synced")


def test_websocket_messages() -> None:
    assert parse_ws_message({"event": "connected", "job_id": "", "status": "connected"}) is None
    event = parse_ws_message(
        {
            "event": "job_status",
            "job_id": "0f0e8b6a-6f6e-4f3e-9a51-3a2f7c0b9d11",
            "status": "timed_out",
            "progress": 0,
            "message": "m",
            "timestamp": "2026-07-21T14:03:11.1+00:00",
        }
    )
    assert event is not None and event.status is JobStatus.TIMED_OUT


def test_client_refuses_package_names_and_versions_with_a_trailing_newline() -> None:
    """The client applies the agent's rule to the whole string (``re.match`` with ``$`` let a
    trailing newline through)."""
    assert check_package_name("openssl") == "openssl"
    assert check_version("1:3.0.2-0ubuntu1.15") == "1:3.0.2-0ubuntu1.15"
    with pytest.raises(ValueError, match="invalid package name"):
        check_package_name("openssl\n")
    with pytest.raises(ValueError, match="invalid package version"):
        check_version("3.0.2\n")
