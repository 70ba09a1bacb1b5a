"""Typed records of what a Linux Patch API agent says, and the pure functions that parse it.

Parsing is liberal where the agent is inconsistent (agent-api.md §4.1, §8): three spellings of
operations and statuses, RFC 3339 with nanoseconds and ``+00:00``, ``packages: ["N packages"]``,
PascalCase package status, unknown fields ignored, unknown error codes mapped to
``UNKNOWN_ERROR``. It is strict where a wrong guess would be dangerous: a payload missing a field
we rely on raises ``ValueError`` (the client turns it into a protocol error).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

KNOWN_ERROR_CODES = frozenset(
    {
        "PKG_MANAGER_ERROR", "COMMAND_NOT_FOUND", "CACHE_REFRESH_ERROR", "NETWORK_ERROR",
        "GPG_ERROR", "PKG_NOT_FOUND", "DEPENDENCY_CONFLICT", "PERMISSION_DENIED", "REBOOT_ERROR",
        "TIMEOUT", "UNKNOWN_ERROR", "AGENT_REBOOTED", "AGENT_RESTARTED",
    }
)  # fmt: skip

_INTERNAL_PACKAGE = re.compile(r"^__.+__$")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_COUNT = re.compile(r"^(\d+) packages?$")


class JobStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    REBOOTING = "rebooting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                       JobStatus.TIMED_OUT})  # fmt: skip


class JobOperation(enum.Enum):
    INSTALL = "install"
    UPDATE = "update"
    REMOVE = "remove"
    PATCH_APPLY = "patch_apply"
    REBOOT = "reboot"
    SELF_UPDATE = "self_update"
    ROLLBACK = "rollback"
    UNKNOWN = "unknown"


class PackageStatus(enum.Enum):
    INSTALLED = "installed"
    AVAILABLE = "available"
    UPGRADABLE = "upgradable"
    NOT_INSTALLED = "not_installed"
    UNKNOWN = "unknown"


def _norm(value: object) -> str:
    return str(value).strip().lower().replace("_", "").replace("-", "")


_STATUS_BY_NORM = {_norm(s.value): s for s in JobStatus} | {"timeout": JobStatus.TIMED_OUT}
_OPERATION_BY_NORM = {_norm(o.value): o for o in JobOperation}
_PACKAGE_STATUS_BY_NORM = {_norm(p.value): p for p in PackageStatus}


def parse_job_status(value: object) -> JobStatus:
    """``timedout`` / ``timed_out`` / ``timeout`` and any case all map to one member."""
    try:
        return _STATUS_BY_NORM[_norm(value)]
    except KeyError:
        raise ValueError(f"unknown job status {value!r}") from None


def parse_operation(value: object) -> JobOperation:
    return _OPERATION_BY_NORM.get(_norm(value), JobOperation.UNKNOWN)


# The spellings agents really send, looked up as they are (no normalising per package: a host
# lists ~1,200 packages per poll); anything else goes through ``_norm``.
_PACKAGE_STATUS_EXACT = {
    spelling: status
    for status in PackageStatus
    for spelling in (status.value, status.value.upper(),
                     status.value.title().replace("_", ""), status.value.title())
}  # fmt: skip


def parse_package_status(value: object) -> PackageStatus:
    if type(value) is str and (status := _PACKAGE_STATUS_EXACT.get(value)) is not None:
        return status
    return _PACKAGE_STATUS_BY_NORM.get(_norm(value), PackageStatus.UNKNOWN)


def parse_error_code(value: object) -> str | None:
    if value is None or value == "":
        return None
    code = str(value).upper()
    return code if code in KNOWN_ERROR_CODES else "UNKNOWN_ERROR"


def parse_time(value: object) -> dt.datetime | None:
    """RFC 3339 with up to nanoseconds, ``+00:00`` or ``Z``; None/empty → None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string, got {type(value).__name__}")
    text = _FRACTION.sub(r"\1", value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def is_internal_job(packages: Sequence[str]) -> bool:
    """Background index refreshes show up as jobs on ``__health_refresh__`` etc. (§4.6)."""
    return any(_INTERNAL_PACKAGE.match(p) for p in packages)


def _str_list(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return tuple(str(v) for v in value)


def _int(value: object, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return int(value)  # type: ignore[call-overload, no-any-return]


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def without_nul(value: Any) -> Any:
    """``value`` (decoded JSON) with every NUL character removed from its strings, keys
    included: PostgreSQL text cannot hold one, and no agent text needs it."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def invalid_text(value: Any) -> str | None:
    """The first string of ``value`` (decoded JSON, keys included) that is not valid Unicode
    (a lone surrogate: UTF-8, and so PostgreSQL text, cannot hold one), or None."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode()
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, list):
        return next((bad for v in value if (bad := invalid_text(v)) is not None), None)
    if isinstance(value, dict):
        for k, v in value.items():
            bad = invalid_text(k)
            if bad is None:
                bad = invalid_text(v)
            if bad is not None:
                return bad
    return None


JOB_ID = re.compile(r"^[0-9a-fA-F-]{36}$")


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the form of an agent job id (a UUID)."""
    return JOB_ID.match(value) is not None


def parse_job_id(value: object) -> str:
    """An agent job id; anything else (a path, a number, garbage) is a protocol error: it
    would be put into ``/jobs/{id}`` later."""
    if not isinstance(value, str) or not is_job_id(value):
        raise ValueError(f"invalid job id {value!r}")
    return value


def _require(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ValueError(f"missing field {key!r}")
    return data[key]


# -- health and system -----------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    status: str  # "healthy" | "degraded" (anything else is treated as degraded)
    uptime_seconds: int
    version: str
    last_cache_update: dt.datetime | None
    cache_status: str | None
    crl_status: str | None
    crl_age_seconds: int | None
    crl_next_update: dt.datetime | None
    gpg_key_status: str | None
    gpg_key_expires_at: dt.datetime | None
    repo_config_synced: bool | None
    repo_config_last_sync: dt.datetime | None

    @property
    def degraded_reasons(self) -> tuple[str, ...]:
        """Why the agent is (or would be) degraded, from the fields it reports (§3.1)."""
        reasons = []
        if self.crl_status in ("invalid", "expired", "missing", "degraded"):
            reasons.append(f"CRL {self.crl_status}")
        if self.gpg_key_status not in (None, "valid"):
            reasons.append(f"GPG key {self.gpg_key_status}")
        if self.repo_config_synced is False:
            reasons.append("repository configuration not synced")
        if self.cache_status == "failed":
            reasons.append("package cache refresh failed")
        if self.status != "healthy" and not reasons:
            reasons.append("agent reports degraded")
        return tuple(reasons)


def parse_health(data: Mapping[str, Any]) -> Health:
    return Health(
        status=str(_require(data, "status")).lower(),
        uptime_seconds=_int(_require(data, "uptime_seconds")),
        version=str(data.get("version") or ""),
        last_cache_update=parse_time(data.get("last_cache_update")),
        cache_status=data.get("cache_status"),
        crl_status=data.get("crl_status"),
        crl_age_seconds=None if data.get("crl_age_seconds") is None
        else _int(data["crl_age_seconds"]),
        crl_next_update=parse_time(data.get("crl_next_update")),
        gpg_key_status=data.get("gpg_key_status"),
        gpg_key_expires_at=parse_time(data.get("gpg_key_expires_at")),
        repo_config_synced=_opt_bool(data.get("repo_config_synced")),
        repo_config_last_sync=parse_time(data.get("repo_config_last_sync")),
    )  # fmt: skip


@dataclass(frozen=True)
class SystemInfo:
    hostname: str
    os: str
    os_version: str
    kernel: str
    architecture: str
    pending_reboot: bool
    package_db_clean: bool | None  # absent on older agents


def parse_system_info(data: Mapping[str, Any]) -> SystemInfo:
    return SystemInfo(
        hostname=str(_require(data, "hostname")),
        os=str(data.get("os") or ""),
        os_version=str(data.get("os_version") or ""),
        kernel=str(data.get("kernel") or ""),
        architecture=str(data.get("architecture") or ""),
        pending_reboot=bool(data.get("pending_reboot", False)),
        package_db_clean=_opt_bool(data.get("package_db_clean")),
    )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    active_state: str
    sub_state: str
    enabled_state: str
    healthy: bool


def parse_service(data: Mapping[str, Any]) -> ServiceStatus:
    return ServiceStatus(
        name=str(_require(data, "name")),
        active_state=str(data.get("active_state") or ""),
        sub_state=str(data.get("sub_state") or ""),
        enabled_state=str(data.get("enabled_state") or ""),
        healthy=bool(data.get("healthy", False)),
    )


# -- packages and patches --------------------------------------------------------------------


class Package(msgspec.Struct, frozen=True, gc=False):
    """One entry of a package list. A frozen msgspec struct, not a dataclass: a host lists
    ~1,200 packages per poll, and a struct is made ~5x faster. Not tracked by the cyclic
    garbage collector (``gc=False``: its fields are strings, an enum, a bool and None, which
    cannot form a cycle), so a package list does not set off collections of the whole heap."""

    name: str
    version: str
    status: PackageStatus
    upgradable: bool
    latest_version: str | None
    description: str


def parse_package(data: Mapping[str, Any]) -> Package:
    return Package(
        name=str(_require(data, "name")),
        version=str(data.get("version") or ""),
        status=parse_package_status(data.get("status")),
        upgradable=bool(data.get("upgradable", False)),
        latest_version=data.get("latest_version"),
        description=str(data.get("description") or ""),
    )


def parse_packages(data: Mapping[str, Any]) -> tuple[Package, ...]:
    items = _require(data, "packages")
    if not isinstance(items, list):
        raise ValueError("packages must be a list")
    return tuple(map(parse_package, items))


@dataclass(frozen=True)
class Patch:
    name: str
    current_version: str
    available_version: str
    severity: str  # critical | high | medium | low (the agent never says low)
    cve_ids: tuple[str, ...]
    requires_reboot: bool
    description: str


@dataclass(frozen=True)
class PatchList:
    patches: tuple[Patch, ...]
    security_updates: int
    requires_reboot: bool


@dataclass(frozen=True)
class PatchPoll:
    """One patch poll's answers (``AgentClient.patch_data``). ``key`` is a 16-byte digest of
    both answers' data exactly as the agent sent it (empty when an answer is unusual); when it
    equals the key the caller passed, the package list was not decoded (``packages`` None):
    the caller has already stored that very data."""

    patches: PatchList
    packages: tuple[Package, ...] | None
    key: bytes


def parse_patches(data: Mapping[str, Any]) -> PatchList:
    items = _require(data, "patches")
    if not isinstance(items, list):
        raise ValueError("patches must be a list")
    patches = tuple(
        Patch(
            name=str(_require(p, "name")),
            current_version=str(p.get("current_version") or ""),
            available_version=str(p.get("available_version") or ""),
            severity=str(p.get("severity") or "medium").lower(),
            cve_ids=_str_list(p.get("cve_ids")),
            requires_reboot=bool(p.get("requires_reboot", False)),
            description=str(p.get("description") or ""),
        )
        for p in items
    )
    return PatchList(
        patches=patches,
        security_updates=_int(data.get("security_updates")),
        requires_reboot=bool(data.get("requires_reboot", any(p.requires_reboot for p in patches))),
    )


# -- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobAccepted:
    """A 202 answer: the agent queued a job."""

    job_id: str
    status: JobStatus
    operation: JobOperation
    packages: tuple[str, ...]
    package_count: int | None  # patch apply says "N packages" instead of names


def parse_job_accepted(data: Mapping[str, Any]) -> JobAccepted:
    packages = _str_list(data.get("packages"))
    count: int | None = None
    if len(packages) == 1 and (match := _COUNT.match(packages[0])):
        count, packages = int(match[1]), ()
    if data.get("package"):
        packages = (str(data["package"]),)
    return JobAccepted(
        job_id=parse_job_id(_require(data, "job_id")),
        status=parse_job_status(data.get("status", "pending")),
        operation=parse_operation(data.get("operation")),
        packages=packages,
        package_count=count,
    )


@dataclass(frozen=True)
class JobInfo:
    """A job as ``/jobs`` (summary) or ``/jobs/{id}`` (detail) reports it."""

    job_id: str
    operation: JobOperation
    status: JobStatus
    created_at: dt.datetime | None
    completed_at: dt.datetime | None
    packages: tuple[str, ...]
    error_code: str | None
    progress: int = 0
    error: str | None = None
    exit_code: int | None = None
    command_stdout: str | None = None
    command_stderr: str | None = None
    logs: tuple[str, ...] = ()

    @property
    def internal(self) -> bool:
        return is_internal_job(self.packages)


def parse_job(data: Mapping[str, Any]) -> JobInfo:
    return JobInfo(
        job_id=str(_require(data, "job_id")),
        operation=parse_operation(data.get("operation")),
        status=parse_job_status(_require(data, "status")),
        created_at=parse_time(data.get("created_at")),
        completed_at=parse_time(data.get("completed_at")),
        packages=_str_list(data.get("packages")),
        error_code=parse_error_code(data.get("error_code")),
        progress=_int(data.get("progress")),
        error=data.get("error"),
        exit_code=None if data.get("exit_code") is None else _int(data["exit_code"]),
        command_stdout=data.get("command_stdout"),
        command_stderr=data.get("command_stderr"),
        logs=_str_list(data.get("logs")),
    )


def parse_jobs(data: Mapping[str, Any]) -> tuple[JobInfo, ...]:
    """Every job of ``GET /jobs`` except the agent's internal refresh jobs."""
    items = _require(data, "jobs")
    if not isinstance(items, list):
        raise ValueError("jobs must be a list")
    return tuple(job for job in (parse_job(j) for j in items) if not job.internal)


@dataclass(frozen=True)
class JobEvent:
    """One ``job_status`` message from the agent's WebSocket."""

    job_id: str
    status: JobStatus
    progress: int
    message: str
    timestamp: dt.datetime | None
    error: str | None
    error_code: str | None


def parse_ws_message(data: Mapping[str, Any]) -> JobEvent | None:
    """A job event, or None for greetings, acknowledgements and errors (nothing to act on)."""
    if data.get("event") != "job_status":
        return None
    return JobEvent(
        job_id=str(_require(data, "job_id")),
        status=parse_job_status(_require(data, "status")),
        progress=_int(data.get("progress")),
        message=str(data.get("message") or ""),
        timestamp=parse_time(data.get("timestamp")),
        error=data.get("error"),
        error_code=parse_error_code(data.get("error_code")),
    )
