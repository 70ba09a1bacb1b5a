"""Scheduler and supervision under trio's virtual clock, with in-memory ports."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import trio
import trio.testing

from actors.scheduler import Scheduler
from actors.state import FleetState, Phase
from settings import ConfigStore
from storage import HostRow

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
