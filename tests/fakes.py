"""In-memory stand-ins for the actors' ports, for tests under trio's fake clock (real I/O and
virtual time do not mix). They implement the same Protocols as the real parts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.agent_errors import AgentError
from actors.agent_records import Health, Package, PackageStatus, Patch, PatchList, SystemInfo
from actors.ports import HostTarget, PatchDiff, StoredHost, diff_patch_data
from settings import PollingPolicy
from storage import HostRow, HostState, Transition

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def fake_wall() -> dt.datetime:
    """Wall clock that follows trio's (virtual) clock."""
    return EPOCH + dt.timedelta(seconds=trio.current_time())


def health(status: str = "healthy", uptime: int = 1000, crl_status: str = "valid") -> Health:
    return Health(
        status, uptime, "2.6.12", None, "fresh", crl_status, 10, None, "valid", None, True, None
    )


@dataclass
class FakeAgent:
    """Answers from its attributes; ``failure`` (an AgentError) makes every call fail,
    ``failures[call]`` only that call (e.g. ``"system_info"``); ``crash`` raises a non-agent
    error (a bug); ``status``/``crl_status`` shape the health answer."""

    name: str
    failure: AgentError | None = None
    failures: dict[str, AgentError] = field(default_factory=dict)
    crash: BaseException | None = None
    uptime: int = 1000
    status: str = "healthy"
    crl_status: str = "valid"
    patch_names: tuple[str, ...] = ("openssl", "curl")
    calls: list[tuple[float, str]] = field(default_factory=list)
    closed: int = 0

    def _call(self, what: str) -> None:
        self.calls.append((trio.current_time(), what))
        if self.crash is not None:
            raise self.crash
        if self.failure is not None:
            raise self.failure
        if what in self.failures:
            raise self.failures[what]

    async def health(self) -> Health:
        self._call("health")
        return health(self.status, uptime=self.uptime, crl_status=self.crl_status)

    async def system_info(self) -> SystemInfo:
        self._call("system_info")
        return SystemInfo(self.name, "Ubuntu", "24.04", "6.8", "x86_64", False, True)

    async def patches(self) -> PatchList:
        self._call("patches")
        patches = tuple(
            Patch(n, "1.0", "1.1", "critical" if "ssl" in n else "medium", (), False, "")
            for n in self.patch_names
        )
        return PatchList(patches, sum(p.severity == "critical" for p in patches), False)

    async def packages(self) -> tuple[Package, ...]:
        self._call("packages")
        return tuple(
            Package(n, "1.0", PackageStatus.INSTALLED, False, "1.0", "")
            for n in ("bash", *self.patch_names)
        )

    async def aclose(self) -> None:
        self.closed += 1

    def times(self, what: str) -> list[float]:
        return [t for t, w in self.calls if w == what]


@dataclass
class FakeFleetAgents:
    """An agent factory handing out one FakeAgent per host name."""

    agents: dict[str, FakeAgent] = field(default_factory=dict)
    policies: dict[str, list[PollingPolicy]] = field(default_factory=dict)

    def __call__(self, target: HostTarget, policy: PollingPolicy) -> FakeAgent:
        self.policies.setdefault(target.name, []).append(policy)
        return self.agents.setdefault(target.name, FakeAgent(target.name))


@dataclass
class MemorySink:
    stored: dict[int, StoredHost] = field(default_factory=dict)
    states: dict[int, HostState] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    diffs: list[tuple[int, PatchDiff]] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)

    async def load(self, host_id: int) -> StoredHost:
        return self.stored.get(host_id, StoredHost())

    def submit_state(self, host_id: int, state: HostState, transition: Transition | None) -> None:
        self.states[host_id] = state
        if transition is not None:
            self.transitions.append(transition)

    async def write_patches(self, host_id: int, diff: PatchDiff, now: dt.datetime) -> int:
        self.diffs.append((host_id, diff))
        return 1

    async def write_patch_data(
        self, host_id: int, patches: PatchList, packages: tuple[Package, ...], now: dt.datetime
    ) -> int:
        """Like ``DatabaseSink``: diff against what is stored, write the diff, keep the result."""
        stored = self.stored.setdefault(host_id, StoredHost())
        diff = diff_patch_data(stored.patches, stored.packages, patches, packages)
        if not diff:
            return 0
        rows = await self.write_patches(host_id, diff, now)
        for row in diff.upserts:
            stored.patches[row.name] = row
        for name in diff.resolved:
            stored.patches.pop(name, None)
        stored.packages.update(dict(diff.package_upserts))
        for name in diff.package_deletes:
            stored.packages.pop(name, None)
        return rows

    def forget(self, host_id: int) -> None:
        self.forgotten.append(host_id)


@dataclass
class MemoryDirectory:
    rows: list[HostRow] = field(default_factory=list)

    async def list_hosts(self) -> list[HostRow]:
        return list(self.rows)

    async def watch(
        self,
        on_change: Callable[[], None],
        on_refresh: Callable[[list[int] | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await trio.sleep_forever()


def polled_state(**changes: Any) -> HostState:
    """A stored state of a host that has been polled before."""
    base = dict(
        health="healthy",
        health_reason="",
        last_seen_at=EPOCH,
        last_health_poll_at=EPOCH,
        last_patch_poll_at=EPOCH,
        last_error="",
        hostname="h",
        os="Ubuntu",
        os_version="24.04",
        kernel="6.8",
        architecture="x86_64",
        agent_version="2.6.12",
        uptime_seconds=500,
        last_boot_at=None,
        pending_reboot=False,
        package_db_clean=True,
        crl_status="valid",
        gpg_key_status="valid",
        pending_patches=0,
        security_patches=0,
        reboot_patches=0,
    )
    base.update(changes)
    return HostState(**base)  # type: ignore[arg-type]
