"""What the web layer needs from the rest of the system, as a Protocol.

The composition root passes one object implementing ``SystemHandle``; web never imports the
actor system. Live snapshots and scans are dataclasses the web layer only serialises
(``web.serialize.to_json``), so they are typed as ``Any`` here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

import trio

from settings import EffectivePolicy
from storage import AuditArg, HostRow, JobSpec


class HandleError(Exception):
    """Input the system refuses, naming the field(s): a 422 in the API, a message beside the
    field on a page. The composition root translates the actor layer's exceptions into these
    (``patch_manager.adapter``); services raise them too. ``fields`` maps field → message."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.fields = {field: message}
        self.message = message

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> Self:
        """One error for several fields at once (a form or body with many problems)."""
        (first, message), *rest = fields.items()
        error = cls(first, message)
        error.fields = dict(fields)
        if rest:
            error.message = "some fields are invalid"
        return error


class InvalidInput(HandleError):
    """422: the value of a field cannot be used."""


class AlreadyExists(HandleError):
    """409: the thing (host, group) is already there."""

    status = 409
    code = "conflict"


class Stale(HandleError):
    """409: what the user confirmed (e.g. a deployment plan) changed since it was shown."""

    status = 409
    code = "conflict"


class TooBusy(HandleError):
    """429: too much of this is running already (e.g. discovery scans); try again later."""

    status = 429
    code = "rate_limited"


class Missing(Exception):
    """404: no such host, group, job, window, blackout or scan."""


@dataclass(frozen=True)
class HealthReport:
    """Liveness of the process and its two vital parts (R-9.4)."""

    ok: bool
    database: str  # "ok" | "down"
    scheduler: str  # "ok" | "stalled" | "stopped"
    details: dict[str, Any] = field(default_factory=dict)


class SystemHandle(Protocol):
    async def health(self) -> HealthReport:
        """Check the database and the scheduler heartbeat; never raises."""
        ...

    def snapshots(self) -> list[Any]: ...

    def snapshot(self, host_id: int) -> Any | None: ...

    def subscribe(
        self, buffer: int = 256
    ) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]:
        """Changes from now on; the channel closes if the subscriber lags too far behind."""
        ...

    def subscribe_jobs(
        self, buffer: int = 64
    ) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]:
        """Job roll-up changes (``job_id``, ``status``) from now on; a lagging subscriber
        loses some (the job page then shows the state it loaded)."""
        ...

    def refresh(self, host_ids: Sequence[int] | None = None) -> int: ...

    async def register_host(
        self,
        name: str,
        *,
        display_name: str = "",
        groups: Sequence[str] = (),
        port: int | None = None,
        audit: AuditArg = None,
    ) -> HostRow:
        """Raises ``InvalidInput`` (422) or ``AlreadyExists`` (409) naming the field.

        ``audit`` (every command that changes something takes one): the audit entry (or a
        function of the result making it) written in the same transaction as the change."""
        ...

    async def remove_host(self, host_id: int, *, audit: AuditArg = None) -> HostRow: ...

    def effective_policy(self, host_id: int) -> EffectivePolicy | None: ...

    async def start_discovery(self, cidr: str, *, audit: AuditArg = None) -> Any:
        """Raises ``InvalidInput`` (field ``cidr``) for a range that cannot be scanned and
        ``TooBusy`` when too many scans run already."""
        ...

    async def discovery(self, scan_id: int) -> Any | None:
        """A scan (scan_id, progress, found): running ones live, finished ones from the
        database; None if unknown."""
        ...

    def cancel_discovery(self, scan_id: int) -> bool: ...

    async def wait_discovery_change(self, scan_id: int) -> Any:
        """The next progress of a running scan; a finished or unknown scan answers at once."""
        ...

    async def register_found(
        self, scan_id: int, addresses: Sequence[str], *, audit: AuditArg = None
    ) -> list[HostRow]:
        """Raises ``InvalidInput`` / ``AlreadyExists`` like ``register_host``."""
        ...

    async def create_job(
        self, spec: JobSpec, host_ids: Sequence[int], *, audit: AuditArg = None
    ) -> int: ...

    async def cancel_job(self, job_id: int, *, audit: AuditArg = None) -> int: ...

    async def retry_failed(self, job_id: int, *, audit: AuditArg = None) -> int: ...

    async def rollback(
        self, job_id: int, host_ids: Sequence[int] | None = None, *, audit: AuditArg = None
    ) -> int:
        """Raises ``InvalidInput`` (field ``host_ids``) when there is nothing to roll back."""
        ...

    def poke_jobs(self) -> None:
        """Windows or blackouts changed: re-evaluate the jobs now."""
        ...

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges for /metrics."""
        ...

    def root_ca_pem(self) -> str: ...

    # -- certificates (issue 14) --------------------------------------------------------------
    async def crl_pem(self) -> bytes:
        """The current CRL (PEM), as the agents fetch it."""
        ...

    def certificate_expiry(self) -> dict[str, float]:
        """Seconds to expiry of the manager's own certificates and the CRL, by kind."""
        ...

    async def renew_certificate(self, kind: str, *, audit: AuditArg = None) -> str:
        """Renew the manager's ``manager_client`` or ``web_server`` certificate now and start
        using it; returns the new serial (hex). ``audit`` (a function of the new serial in
        hex) is written with the new certificate's record; the renewal itself (files on disk,
        in use) is not undone when that write fails."""
        ...

    async def certificates_revoked(self) -> None:
        """A certificate was revoked in the database: re-sign the CRL, refuse it at once."""
        ...

    def enrolment_settings(self) -> tuple[int, float]:
        """(hours an enrolment request stays valid, seconds between two requests from one
        source address): ``[pki] enrol_token_hours``, ``enrol_rate_s``."""
        ...

    def auto_approval(self) -> tuple[tuple[str, ...], str, str]:
        """Enrolment auto-approval: (CIDRs, bootstrap token or "", group or "")."""
        ...

    async def issue_agent_certificate(
        self, names: Sequence[str], host_id: int | None, *, audit: AuditArg = None
    ) -> tuple[int, str, str]:
        """Issue and record an agent server certificate (SANs = ``names``); returns
        ``(serial, cert_pem, key_pem)``. The key is not kept anywhere."""
        ...
