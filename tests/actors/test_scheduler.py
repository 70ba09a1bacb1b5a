"""Scheduler and supervision under trio's virtual clock, with in-memory ports."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.ports import PatchDiff, StoredHost
from actors.scheduler import Scheduler
from actors.state import FleetState, Phase
from settings import ConfigStore
from storage import DatabaseUnavailable, HostRow

from ..fakes import FakeFleetAgents, MemoryDirectory, MemorySink, fake_wall


def row(host_id: int, name: str, groups: tuple[str, ...] = ()) -> HostRow:
    return HostRow(host_id, name, f"192.0.2.{host_id}", 12443, "", False, groups)


class Rig:
    def __init__(self, tmp_path: Path, rows: list[HostRow], supervision: str = "") -> None:
        self.conf = tmp_path
        (tmp_path / "patch-manager.toml").write_text(supervision)
        (tmp_path / "hosts.toml").write_text("")
        self.store = ConfigStore(tmp_path)
        self.agents = FakeFleetAgents()
        self.directory = MemoryDirectory(rows)
        self.fleet = FleetState()
        self.scheduler = Scheduler(
            config=self.store,
            directory=self.directory,
            agent_factory=self.agents,
            sink=MemorySink(),
            fleet=self.fleet,
            rng=random.Random(3),
            wall=fake_wall,
        )


async def test_hosts_start_stop_and_new_hosts_start_within_a_second(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "a"), row(2, "b")])
    await nursery.start(rig.scheduler.run)
    assert set(rig.scheduler.hosts) == {1, 2}
    rig.directory.rows.append(row(3, "c"))
    rig.scheduler.request_reconcile()
    await trio.sleep(1.0)
    assert rig.agents.agents["c"].times("health")  # polled within a second of being added
    rig.directory.rows = [r for r in rig.directory.rows if r.id != 1]
    await rig.scheduler.reconcile_now()
    assert set(rig.scheduler.hosts) == {2, 3}
    assert rig.fleet.get(1) is None
    await trio.testing.wait_all_tasks_blocked()
    assert rig.agents.agents["a"].closed == 1  # its agent connection was closed


async def test_crashing_actor_is_restarted_then_failed_without_touching_others(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(
        tmp_path,
        [row(1, "crashy"), row(2, "fine")],
        "[supervision]\nmax_crashes = 3\nwindow_s = 600\nrestart_min_s = 1.0\n",
    )
    rig.agents.agents["crashy"] = rig.agents(rig_target(1, "crashy"), rig.store.current.polling)
    rig.agents.agents["crashy"].crash = RuntimeError("bug in the actor")
    await nursery.start(rig.scheduler.run)
    await rig.fleet.wait_until(lambda snaps: any(s.phase is Phase.FAILED for s in snaps))
    failed = rig.fleet.get(1)
    assert failed is not None and failed.crashes == 4
    assert "bug in the actor" in failed.last_error
    assert rig.scheduler.hosts[1].supervision.failed
    assert rig.fleet.get(2).health.value == "healthy"  # type: ignore[union-attr]
    # Restarts backed off 1, 2, 4 s (±20 %) between the crashes.
    crashes = [t for t, _ in rig.agents.agents["crashy"].calls]  # each run dies on its 1st call
    gaps = [b - a for a, b in itertools.pairwise(crashes)]
    for gap, base in zip(gaps, (1, 2, 4), strict=True):
        assert base * 0.8 <= gap <= base * 1.2 + 1.0  # + the first-poll spread
    # A refresh gives a failed host another chance.
    rig.agents.agents["crashy"].crash = None
    rig.scheduler.refresh([1])
    await rig.fleet.wait_until(lambda s: rig.fleet.get(1).health.value == "healthy")  # type: ignore[union-attr]


def rig_target(host_id: int, name: str):  # type: ignore[no-untyped-def]
    from actors.ports import HostTarget

    return HostTarget(host_id, name, f"192.0.2.{host_id}", 12443)


async def test_reload_changes_only_the_affected_actor(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "web1", ("web",)), row(2, "db1", ("db",))])
    await nursery.start(rig.scheduler.run)
    await trio.sleep(2)
    web_actor = rig.scheduler.hosts[1].actor
    db_actor = rig.scheduler.hosts[2].actor
    (tmp_path / "hosts.toml").write_text("[groups.web]\nhealth_interval_s = 60\n")
    assert rig.store.reload()
    await trio.sleep(1)
    assert web_actor is not None and db_actor is not None
    assert web_actor.policy.health_interval_s == 60
    assert db_actor.policy.health_interval_s == 300
    # The web host's agent was rebuilt with the new policy; the db host's never was.
    assert [p.health_interval_s for p in rig.agents.policies["web1"]] == [300, 60]
    assert [p.health_interval_s for p in rig.agents.policies["db1"]] == [300]
    before = len(rig.agents.agents["web1"].times("health"))
    await trio.sleep(600)
    assert len(rig.agents.agents["web1"].times("health")) - before >= 9  # every 60 s now
    policy = rig.scheduler.policy_of(1)
    assert policy is not None and policy.origins["health_interval_s"] == "group:web"


class FlakySink(MemorySink):
    """A sink whose database can be down (every read and write raises DatabaseUnavailable)."""

    down: bool = False

    async def load(self, host_id: int) -> StoredHost:
        if self.down:
            raise DatabaseUnavailable("database error: connection refused")
        return await super().load(host_id)

    async def write_patches(self, host_id: int, diff: PatchDiff, now: dt.datetime) -> int:
        if self.down:
            raise DatabaseUnavailable("database error: connection refused")
        return await super().write_patches(host_id, diff, now)


STRICT = "[supervision]\nmax_crashes = 1\nwindow_s = 600\nrestart_min_s = 1.0\n"


async def test_a_database_outage_at_actor_start_is_waited_out_and_never_counted_as_a_crash(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(i, f"h{i}") for i in range(1, 6)], STRICT)
    sink = rig.scheduler.sink = FlakySink()
    sink.down = True
    await nursery.start(rig.scheduler.run)
    await trio.sleep(90)  # a 90 s outage while every actor starts
    snaps = rig.fleet.snapshots()
    assert {s.phase for s in snaps} == {Phase.WAITING_FOR_DATABASE}
    assert {s.crashes for s in snaps} == {0}
    assert not any(r.supervision.failed for r in rig.scheduler.hosts.values())
    sink.down = False
    await trio.sleep(31)  # the longest wait between two tries, then the first poll (< 1 s)
    assert {s.health.value for s in rig.fleet.snapshots()} == {"healthy"}
    assert all(rig.agents.agents[f"h{i}"].times("health") for i in range(1, 6))


async def test_patch_data_unwritable_during_an_outage_is_kept_written_later_and_polling_goes_on(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "a")], STRICT)
    sink = rig.scheduler.sink = FlakySink()
    await nursery.start(rig.scheduler.run)
    await trio.sleep(2)
    assert len(sink.diffs) == 1  # the first patch data
    agent = rig.agents.agents["a"]
    sink.down = True
    agent.patch_names = ("openssl", "curl", "zlib")  # something new to write
    rig.scheduler.refresh([1])
    await trio.sleep(600)  # 10 min outage: two health polls at least, no crash
    assert len(sink.diffs) == 1
    assert len([t for t in agent.times("health") if t > 2]) >= 2
    snapshot = rig.fleet.get(1)
    assert snapshot is not None and snapshot.crashes == 0 and snapshot.phase is not Phase.FAILED
    assert snapshot.pending_patches == 3
    sink.down = False
    await trio.sleep(31)
    assert len(sink.diffs) == 2
    assert [p.name for p in sink.diffs[1][1].upserts] == ["zlib"]


async def test_a_failed_host_is_tried_again_after_failed_retry_s(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "crashy")], STRICT + "failed_retry_s = 600\n")
    rig.agents.agents["crashy"] = rig.agents(rig_target(1, "crashy"), rig.store.current.polling)
    rig.agents.agents["crashy"].crash = RuntimeError("bug in the actor")
    await nursery.start(rig.scheduler.run)
    await rig.fleet.wait_until(lambda snaps: any(s.phase is Phase.FAILED for s in snaps))
    failed_at = trio.current_time()
    rig.agents.agents["crashy"].crash = None
    await trio.sleep(599)
    assert rig.fleet.get(1).phase is Phase.FAILED  # type: ignore[union-attr]
    await trio.sleep(2)
    assert rig.fleet.get(1).health.value == "healthy"  # type: ignore[union-attr]
    assert rig.agents.agents["crashy"].times("health")[-1] >= failed_at + 600
    assert not rig.scheduler.hosts[1].supervision.failed


class BrokenDirectory(MemoryDirectory):
    """A directory whose listener fails with a non-database error the first ``failures`` times."""

    failures: int = 2
    watches: int = 0

    async def watch(
        self,
        on_change: Callable[[], None],
        on_refresh: Callable[[list[int] | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.watches += 1
        if self.watches <= self.failures:
            raise RuntimeError("listener bug")
        await super().watch(on_change, on_refresh, task_status=task_status)


async def test_host_directory_listener_errors_are_logged_and_restarted_never_ending_the_scheduler(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(tmp_path, [row(1, "a")])
    directory = rig.scheduler.directory = BrokenDirectory([row(1, "a")])
    await nursery.start(rig.scheduler.run)
    await trio.sleep(10)
    assert directory.watches == 3
    assert rig.scheduler.running
    assert len([r for r in caplog.records if "listener failed" in r.message]) == 2
    directory.rows.append(row(2, "b"))
    await rig.scheduler.reconcile_now()
    assert set(rig.scheduler.hosts) == {1, 2}


async def test_a_removed_host_is_forgotten_by_the_sink(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "a"), row(2, "b")])
    await nursery.start(rig.scheduler.run)
    rig.directory.rows = [row(1, "a")]
    await rig.scheduler.reconcile_now()
    assert rig.scheduler.sink.forgotten == [2]  # type: ignore[attr-defined]


async def test_outage_waits_grow_during_an_outage_and_start_short_again_after_a_healthy_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from actors.supervisor import SupervisionState, supervise
    from settings import SupervisionSettings

    starts: list[float] = []
    healthy_for = {4: 1000.0}  # the fifth run lasts a while, then the database goes again

    async def actor() -> None:
        starts.append(trio.current_time())
        await trio.sleep(healthy_for.get(len(starts) - 1, 0.0))
        if len(starts) < 8:
            raise DatabaseUnavailable("connection refused")

    state = SupervisionState()
    settings = SupervisionSettings(1, 300, 1.0, 60.0, 600.0)
    await supervise("h", actor, settings, rng=random.Random(1), state=state)
    gaps = [round(b - a) for a, b in itertools.pairwise(starts)]
    assert gaps == [1, 2, 5, 10, 1000 + 1, 2, 5]
    assert (state.crashes, state.failed) == (0, False)


async def test_the_heartbeat_beats_every_tick_after_a_burst_of_reconcile_requests(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, [row(1, "a")])
    await nursery.start(rig.scheduler.run)
    for _ in range(100):  # a burst of host changes: each wakes the loop early
        rig.scheduler.request_reconcile()
        await trio.sleep(0.01)
    lags = []
    for _ in range(40):
        await trio.sleep(0.5)
        assert rig.scheduler.heartbeat is not None
        lags.append(trio.current_time() - rig.scheduler.heartbeat)
    assert max(lags) <= rig.scheduler.tick


async def test_a_stored_host_the_address_policy_refuses_is_not_polled_until_a_reload_permits_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    loopback = HostRow(2, "lo", "127.0.0.5", 12443, "", False, ())
    rig = Rig(tmp_path, [row(1, "a"), loopback], '[agents]\nallow_addresses = ["127.0.0.0/8"]\n')
    await nursery.start(rig.scheduler.run)
    assert set(rig.scheduler.hosts) == {1, 2}
    (tmp_path / "patch-manager.toml").write_text("")  # narrowed: loopback is refused again
    rig.store.reload()
    await rig.fleet.wait_until(
        lambda snaps: any(s.host_id == 2 and s.phase is Phase.REFUSED for s in snaps)
    )
    assert set(rig.scheduler.hosts) == {1}
    refused = rig.fleet.get(2)
    assert refused is not None
    assert "agents.allow_addresses" in refused.last_error
    assert "loopback" in refused.summary
    polls = len(rig.agents.agents["lo"].times("health"))
    await trio.sleep(7200)
    assert len(rig.agents.agents["lo"].times("health")) == polls  # not polled meanwhile
    (tmp_path / "patch-manager.toml").write_text('[agents]\nallow_addresses = ["127.0.0.5/32"]\n')
    rig.store.reload()
    await rig.fleet.wait_until(
        lambda snaps: any(s.host_id == 2 and s.phase is not Phase.REFUSED for s in snaps)
    )
    await trio.sleep(1.0)
    assert set(rig.scheduler.hosts) == {1, 2}
    assert len(rig.agents.agents["lo"].times("health")) > polls
