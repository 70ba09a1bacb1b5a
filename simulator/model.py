"""Simulated agent state that has no I/O: jobs, their three spellings, faults, failure texts."""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any


def wall_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(when: dt.datetime | None) -> str | None:
    """chrono's format: nanoseconds and ``+00:00`` (agent-api.md §2.1)."""
    if when is None:
        return None
    nanos = when.microsecond * 1000 + time.time_ns() % 1000
    return f"{when:%Y-%m-%dT%H:%M:%S}.{nanos:09d}+00:00"


class Op(enum.Enum):
    """Operations; ``value`` is the 202 spelling, ``rest`` the /jobs spelling."""

    INSTALL = "install"
    UPDATE = "update"
    REMOVE = "remove"
    PATCH_APPLY = "patch_apply"
    REBOOT = "reboot"
    SELF_UPDATE = "self_update"
    ROLLBACK = "rollback"

    @property
    def rest(self) -> str:
        return self.value.replace("_", "")

    @property
    def accepted(self) -> str:
        # A self-update is accepted as an ordinary "update".
        return "update" if self is Op.SELF_UPDATE else self.value


class St(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    REBOOTING = "rebooting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def rest(self) -> str:
        return "timedout" if self is St.TIMED_OUT else self.value

    @property
    def terminal(self) -> bool:
        return self in (St.COMPLETED, St.FAILED, St.CANCELLED, St.TIMED_OUT)

    @property
    def active(self) -> bool:
        return not self.terminal


@dataclass
class SimJob:
    op: Op
    packages: list[str]
    internal: bool = False
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: St = St.PENDING
    progress: int = 0
    message: str = "Job created"
    created_at: dt.datetime = field(default_factory=wall_now)
    completed_at: dt.datetime | None = None
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    exit_code: int | None = None
    command_stdout: str | None = None
    command_stderr: str | None = None
    rollback_job_id: str | None = None
    # Execution parameters.
    versions: dict[str, str | None] = field(default_factory=dict)
    apply_all: bool = False
    allow_reboot: bool = False
    reboot_delay_seconds: int = 0

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "operation": self.op.rest,
            "status": self.status.rest,
            "created_at": rfc3339(self.created_at),
            "completed_at": rfc3339(self.completed_at),
            "packages": list(self.packages),
        }
        if self.error_code:
            data["error_code"] = self.error_code
        return data

    def detail(self) -> dict[str, Any]:
        data = self.summary()
        data.update(
            progress=self.progress,
            message=self.message,
            logs=list(self.logs),
            error=self.error,
            rollback_job_id=self.rollback_job_id,
            exclusive_mode=self.op is Op.ROLLBACK,
        )
        for key in ("exit_code", "command_stdout", "command_stderr"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "event": "job_status",
            "job_id": self.job_id,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "timestamp": rfc3339(wall_now()),
        }
        if self.status is St.FAILED and self.error_code:
            data["error"] = self.error
            data["error_code"] = self.error_code
        return data


# How each failure code looks when apt produces it (exit code, stderr, error chain head).
FAILURES: dict[str, tuple[int | None, str]] = {
    "PKG_NOT_FOUND": (100, "E: Unable to locate package {pkg}"),
    "NETWORK_ERROR": (100, "E: Failed to fetch http://archive.example/{pkg}.deb  404  Not Found"),
    "GPG_ERROR": (100, "W: GPG error: http://archive.example stable InRelease: The following "
                       "signatures couldn't be verified because the public key is not available: "
                       "NO_PUBKEY 0123456789ABCDEF\nE: The repository is not signed."),
    "DEPENDENCY_CONFLICT": (100, "E: Unable to correct problems, you have held broken packages."),
    "PERMISSION_DENIED": (100, "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by "
                               "process 4242 (apt-get)"),
    "PKG_MANAGER_ERROR": (100, "E: Sub-process /usr/bin/dpkg returned an error code (1)"),
    "CACHE_REFRESH_ERROR": (100, "E: Some index files failed to download."),
    "TIMEOUT": (None, "Command timed out after 1800 seconds"),
    "UNKNOWN_ERROR": (1, "unexpected failure"),
}  # fmt: skip


@dataclass(frozen=True)
class CommandFailure:
    """A package command that failed: its exit code and stderr; ``code`` is set only for an
    injected failure (fault ``job_failures``), otherwise the agent classifies the text."""

    exit_code: int | None
    stderr: str
    code: str | None = None


def first_line(text: str) -> str:
    """The first non-empty line, trimmed (error_utils.rs ``first_nonempty_line``)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def classify(text: str) -> str:
    """The agent's error code for a failed command whose error chain reads ``text``
    (error_utils.rs ``classify_error``: keywords over the chain, in which the command appears
    only as its one-line summary)."""
    lower = text.lower()
    if any(w in lower for w in ("gpg", "signature", "untrusted")):
        return "GPG_ERROR"
    network = ("404", "not found", "failed to fetch", "unable to fetch", "could not resolve",
               "connection refused", "network is unreachable")  # fmt: skip
    located = ("unable to locate package", "no package available", "package foo",
               "no such package")  # fmt: skip
    if any(w in lower for w in network):
        return "PKG_NOT_FOUND" if any(w in lower for w in located) else "NETWORK_ERROR"
    if any(w in lower for w in located[:2]):
        return "PKG_NOT_FOUND"
    if any(w in lower for w in ("dependency", "dependencies", "conflict", "broken count",
                                "held broken package")):  # fmt: skip
        return "DEPENDENCY_CONFLICT"
    if "permission denied" in lower or "lock file" in lower:
        return "PERMISSION_DENIED"
    if "reboot" in lower or "shutdown" in lower:
        return "REBOOT_ERROR"
    if "cache refresh" in lower or "check-update" in lower:
        return "CACHE_REFRESH_ERROR"
    return "PKG_MANAGER_ERROR"


DEGRADED_REASONS = ("crl_expired", "crl_missing", "gpg_expired", "gpg_missing", "repo_unsynced",
                    "recovery")  # fmt: skip


class FaultError(ValueError):
    """A fault setting that does not exist or has a wrong value."""


@dataclass
class Faults:
    """What is wrong with one simulated agent right now. All off by default."""

    down: bool = False  # not listening: connection refused
    half_open: bool = False  # accept TCP, never complete TLS
    hang: bool = False  # read requests, never answer
    slow_reply_s: float = 0.0  # delay before every answer
    server_error: bool = False  # read endpoints answer 500 PKG_MANAGER_ERROR
    garbage: bool = False  # answers with malformed JSON
    tls_reject: bool = False  # refuse every client certificate in the handshake
    lose_events: float = 0.0  # probability that a WebSocket event is lost
    degraded: str = ""  # one of DEGRADED_REASONS, or "" for healthy
    job_failures: list[str] = field(default_factory=list)  # the next jobs fail with these codes
    fail_all_jobs: str = ""  # every job fails with this code
    whitelist: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])
    deny_mode: str = "http403"  # or "close"
    queue_depth: int = 100
    rate_limit: bool = True
    read_per_minute: int = 120
    read_burst: int = 30
    destructive_per_minute: int = 20
    destructive_burst: int = 10
    downgrades: str = "refuse"  # apt refuses downgrades with -y; "allow" to let them through
    package_db_clean: bool = True  # False: `dpkg --audit` finds problems (reboot gate)
    admission_retry_after_s: int = 60  # Retry-After of admission refusals (QUEUE_FULL, …)
    drop_job_answers: int = 0  # the next N accepted jobs: created, then no answer (hang up)
    hold_job_answers: bool = False  # accepted jobs: created, then no answer for 120 s
    job_answer_delay_s: float = 0.0  # accepted jobs: created, answered this much later
    garbage_events: bool = False  # a malformed WebSocket message before every job event
    apt_parse_bug: bool = False  # §3.10: current_version = the new one, available = "amd64"
    reboot_sequence: str = "new"  # "2.5.5": patch job completed, then a separate reboot job

    def update(self, values: dict[str, Any]) -> None:
        """Apply ``values`` (from TOML or the control API); raises FaultError naming the key."""
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise FaultError(f"unknown fault {key!r} (known: {', '.join(sorted(known))})")
            current = getattr(self, key)
            if isinstance(current, bool):
                ok = isinstance(value, bool)
            elif isinstance(current, int):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            elif isinstance(current, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                value = float(value) if ok else value
            elif isinstance(current, list):
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise FaultError(f"fault {key!r} expects a {type(current).__name__}")
            if key == "degraded" and value and value not in DEGRADED_REASONS:
                raise FaultError(f"degraded must be one of {', '.join(DEGRADED_REASONS)}")
            if key == "deny_mode" and value not in ("close", "http403"):
                raise FaultError("deny_mode must be close or http403")
            if key == "reboot_sequence" and value not in ("new", "2.5.5"):
                raise FaultError("reboot_sequence must be new or 2.5.5")
            if key in ("job_failures", "fail_all_jobs"):
                codes = value if isinstance(value, list) else [value] if value else []
                for code in codes:
                    if code not in FAILURES:
                        raise FaultError(f"unknown job failure {code!r}")
            if key == "lose_events" and value > 1:
                raise FaultError("lose_events is a probability (0 to 1)")
            setattr(self, key, list(value) if isinstance(value, list) else value)  # own copy
