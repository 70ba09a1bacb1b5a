"""The interfaces a host actor works through: the agent and the store.

The real agent is ``AgentClient``; the real store is ``DatabaseSink``. Tests under a fake clock
plug in in-memory implementations (real I/O and virtual time do not mix).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from settings import PollingPolicy
from storage import HostState, JobHostRow, JobRow, PatchRow, Transition

from .agent_records import Health, JobAccepted, JobInfo, Package, PatchList, SystemInfo


@dataclass(frozen=True)
class HostTarget:
    """What an actor needs to know about its host (from the hosts table)."""

    host_id: int
    name: str
    address: str
    port: int
    groups: tuple[str, ...] = ()


class AgentPort(Protocol):
    async def health(self) -> Health: ...

    async def system_info(self) -> SystemInfo: ...

    async def patches(self) -> PatchList: ...

    async def packages(self) -> tuple[Package, ...]: ...

    async def aclose(self) -> None: ...


class JobAgentPort(AgentPort, Protocol):
    """The agent as a job executor sees it (``AgentClient`` implements it)."""

    async def apply_patches(
        self, selection: Any, *, allow_reboot: bool, reboot_delay_seconds: int = 0
    ) -> JobAccepted: ...

    async def install(
        self,
        packages: Sequence[tuple[str, str | None]],
        *,
        no_recommends: bool = True,
        force: bool = False,
    ) -> JobAccepted: ...

    async def update(self, name: str) -> JobAccepted: ...

    async def remove(self, name: str) -> JobAccepted: ...

    async def reboot(
        self,
        *,
        delay_seconds: int = 0,
        force: bool = False,
        acknowledge_package_database_corruption_risk: bool = False,
    ) -> JobAccepted: ...

    async def job(self, job_id: str) -> JobInfo: ...

    async def jobs(self, *, status: str | None = None, limit: int = 50) -> tuple[JobInfo, ...]: ...

    def job_events(self) -> AbstractAsyncContextManager[Any]: ...


class JobStore(Protocol):
    """Job rows as one job runner (one owner, holding leases) sees them. Transitions return
    False when the row is not (or no longer) in the expected state or not this owner's."""

    async def claim_next(self, host_id: int) -> JobHostRow | None: ...

    async def take_over(self, host_id: int) -> list[JobHostRow]: ...

    async def renew(self, row_id: int) -> bool: ...

    async def row(self, row_id: int) -> JobHostRow | None: ...

    async def job(self, job_id: int) -> JobRow: ...

    async def security_patches(self, host_id: int) -> list[str]: ...

    async def advance(
        self,
        row_id: int,
        from_states: Sequence[str],
        to_state: str,
        *,
        within_permit: bool = False,
        **values: Any,
    ) -> bool: ...

    async def update(self, row_id: int, **values: Any) -> bool: ...

    async def finish(self, row_id: int, state: str, **values: Any) -> bool: ...

    async def recorded_agent_jobs(self, host_id: int) -> set[str]: ...


AgentFactory = Callable[[HostTarget, PollingPolicy], AgentPort]


@dataclass
class StoredHost:
    """What the store remembers of a host when its actor starts: its state, and its patch data
    either as maps or (``DatabaseSink``) only as their ``data_digest``: an actor keeps the
    digest, never the maps."""

    state: HostState | None = None
    patches: dict[str, PatchRow] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    digest: bytes | None = None
    health_since: dt.datetime | None = None  # the last health transition (the host's "since")

    def data_digest(self) -> bytes:
        return self.digest if self.digest is not None else data_digest(self.patches, self.packages)


@dataclass(frozen=True)
class PatchDiff:
    upserts: tuple[PatchRow, ...] = ()
    resolved: tuple[str, ...] = ()
    package_upserts: tuple[tuple[str, str], ...] = ()
    package_deletes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.upserts or self.resolved or self.package_upserts or self.package_deletes)


class HostSink(Protocol):
    async def load(self, host_id: int) -> StoredHost:
        """The host's stored state, open patches and packages."""
        ...

    def submit_state(self, host_id: int, state: HostState, transition: Transition | None) -> None:
        """Queue the latest state for the next batched write (never blocks)."""
        ...

    async def write_patches(self, host_id: int, diff: PatchDiff, now: dt.datetime) -> int:
        """Write a patch-data diff now; returns rows written."""
        ...

    async def write_patch_data(
        self, host_id: int, patches: PatchList, packages: tuple[Package, ...], now: dt.datetime
    ) -> int:
        """Diff a fresh poll against the stored patch data and write what changed (the
        ``DatabaseSink`` reads, diffs and writes in a worker thread); returns rows written."""
        ...

    def forget(self, host_id: int) -> None:
        """Drop queued writes of a removed host."""
        ...


def diff_patch_data(
    known_patches: dict[str, PatchRow],
    known_packages: dict[str, str],
    patches: PatchList,
    packages: tuple[Package, ...],
) -> PatchDiff:
    """What changed between the stored patch data and a fresh poll (pure)."""
    fresh, installed = fresh_rows(patches, packages)
    upserts = tuple(row for name, row in sorted(fresh.items()) if known_patches.get(name) != row)
    resolved = tuple(sorted(set(known_patches) - set(fresh)))
    package_upserts = tuple(
        (name, version) for name, version in sorted(installed.items())
        if known_packages.get(name) != version
    )  # fmt: skip
    package_deletes = tuple(sorted(set(known_packages) - set(installed)))
    return PatchDiff(upserts, resolved, package_upserts, package_deletes)


def fresh_rows(
    patches: PatchList, packages: tuple[Package, ...]
) -> tuple[dict[str, PatchRow], dict[str, str]]:
    """A poll's patch data as it is stored: open patches by name, installed versions by name."""
    rows = {
        p.name: PatchRow(p.name, p.current_version, p.available_version, p.severity,
                         tuple(p.cve_ids), p.requires_reboot)
        for p in patches.patches
    }  # fmt: skip
    return rows, {p.name: p.version for p in packages if p.version}


def data_digest(patches: Mapping[str, PatchRow], packages: Mapping[str, str]) -> bytes:
    """A 16-byte digest of patch data (as ``fresh_rows`` or ``storage.load_patch_data`` give
    it): equal digests mean ``diff_patch_data`` finds nothing to write."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(patches):
        r = patches[name]
        h.update(repr((r.name, r.current_version, r.available_version, r.severity,
                       tuple(r.cve_ids), r.requires_reboot)).encode())  # fmt: skip
        h.update(b"\n")
    h.update(b"\0packages\0")
    h.update("\n".join(f"{n}\0{packages[n]}" for n in sorted(packages)).encode())
    return h.digest()


def digest_of_poll(patches: PatchList, packages: tuple[Package, ...]) -> bytes:
    return data_digest(*fresh_rows(patches, packages))
