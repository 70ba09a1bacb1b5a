"""What the web layer needs from the rest of the system, as a Protocol.

The composition root passes one object implementing ``SystemHandle``; web never imports the
actor system. Live snapshots and scans are dataclasses the web layer only serialises
(``web.serialize.to_json``), so they are typed as ``Any`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from settings import EffectivePolicy
from storage import HostRow, JobSpec


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

    def refresh(self, host_ids: Sequence[int] | None = None) -> int: ...

    async def register_host(
        self,
        name: str,
        *,
        display_name: str = "",
        groups: Sequence[str] = (),
        port: int | None = None,
    ) -> HostRow:
        """Raises ValueError (with a ``field`` attribute) for a host that cannot be added."""
        ...

    async def remove_host(self, host_id: int) -> HostRow: ...

    def effective_policy(self, host_id: int) -> EffectivePolicy | None: ...

    async def start_discovery(self, cidr: str) -> Any:
        """Raises ValueError for a range that cannot be scanned."""
        ...

    async def discovery(self, scan_id: int) -> Any | None:
        """A scan (scan_id, progress, found): running ones live, finished ones from the
        database; None if unknown."""
        ...

    def cancel_discovery(self, scan_id: int) -> bool: ...

    async def wait_discovery_change(self, scan_id: int) -> Any:
        """The next progress of a running scan; a finished or unknown scan answers at once."""
        ...

    async def register_found(self, scan_id: int, addresses: Sequence[str]) -> list[HostRow]: ...

    async def create_job(self, spec: JobSpec, host_ids: Sequence[int]) -> int: ...

    async def cancel_job(self, job_id: int) -> int: ...

    async def retry_failed(self, job_id: int) -> int: ...

    async def rollback(self, job_id: int, host_ids: Sequence[int] | None = None) -> int:
        """Raises ValueError when there is nothing to roll back."""
        ...

    def poke_jobs(self) -> None:
        """Windows or blackouts changed: re-evaluate the jobs now."""
        ...

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges for /metrics."""
        ...

    def root_ca_pem(self) -> str: ...
