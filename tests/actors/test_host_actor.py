"""Host actor timing and health under trio's virtual clock, with in-memory ports."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from actors.agent_errors import AgentRequestError, AgentTimeout, RateLimited, Unreachable
from actors.health import HealthState
from actors.host import HostActor
from actors.ports import HostTarget, StoredHost
from actors.state import FleetState, Phase
from actors.timing import phase_offset
from settings import PollingPolicy

from ..fakes import FakeFleetAgents, MemorySink, fake_wall, polled_state

POLICY = PollingPolicy(
    health_interval_s=300,
    patch_interval_s=1800,
    request_timeout_s=30.0,
    connect_timeout_s=10.0,
    backoff_s=(60, 300, 1800),
    jitter_ratio=0.0,
    max_connections=2,
    paused=False,
)
TARGET = HostTarget(7, "web07.example.com", "192.0.2.7", 12443)
KEY = f"{TARGET.host_id}:{TARGET.name}"


class Rig:
    def __init__(
        self,
        policy: PollingPolicy = POLICY,
        stored: StoredHost | None = None,
        job_store: Any = None,
    ) -> None:
        self.agents = FakeFleetAgents()
        self.sink = MemorySink()
        if stored is not None:
            self.sink.stored[TARGET.host_id] = stored
        self.fleet = FleetState()
        self.actor = HostActor(
            TARGET,
            policy,
            agent_factory=self.agents,
            sink=self.sink,
            fleet=self.fleet,
            rng=random.Random(1),
            wall=fake_wall,
            job_store=job_store,
        )

    @property
    def agent(self) -> Any:
        return self.agents.agents[TARGET.name]

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.actor.run)


def seen_before() -> StoredHost:
    return StoredHost(state=polled_state(uptime_seconds=500))


async def test_polls_on_a_drift_free_cadence_at_the_phase_offset(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    await rig.start(nursery)
    await trio.sleep(3 * 300 + 1)
    offset = phase_offset("h" + KEY, 300)
    expected = [start + offset + k * 300 for k in range(3)]
    assert rig.agent.times("health") == pytest.approx(expected)
    patch_offset = phase_offset("p" + KEY, 1800)
    assert rig.agent.times("patches") == pytest.approx(
        [start + patch_offset] if patch_offset < 901 else []
    )


async def test_a_never_polled_host_is_polled_within_a_second(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig()
    await rig.start(nursery)
    await trio.sleep(1.01)
    assert len(rig.agent.times("health")) == 1
    assert len(rig.agent.times("patches")) == 1
    assert rig.fleet.get(7).health is HealthState.HEALTHY  # type: ignore[union-attr]
    assert rig.sink.states[7].pending_patches == 2
    assert rig.sink.states[7].security_patches == 1


async def test_backoff_sequence_then_unreachable_then_normal_cadence(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.agent.failure = Unreachable(TARGET.name, "connection refused")
    first = start + phase_offset("h" + KEY, 300)
    await trio.sleep(first - start + 60 + 300 + 1800 + 1)
    attempts = rig.agent.times("health")
    assert attempts[:4] == pytest.approx([first, first + 60, first + 360, first + 2160])
    # Hysteresis: unreachable only from the third consecutive failure, recorded once.
    assert [t.to_state for t in rig.sink.transitions] == ["unreachable"]
    assert rig.sink.transitions[0].at.timestamp() == pytest.approx(
        fake_wall().timestamp() - (trio.current_time() - (first + 360)), abs=0.01
    )
    # Then back to the normal cadence: the next attempt is on the anchor grid.
    await trio.sleep(300)
    later = [t for t in rig.agent.times("health") if t > first + 2160]
    assert later and (later[0] - first) % 300 == pytest.approx(0, abs=1e-6)


async def test_jitter_stays_within_bounds(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(policy=replace(POLICY, jitter_ratio=0.1), stored=seen_before())
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.agent.failure = Unreachable(TARGET.name, "refused")
    await trio.sleep(300 + 60 * 1.1 + 300 * 1.1 + 1800 * 1.1 + 1)
    t = rig.agent.times("health")
    gaps = [b - a for a, b in itertools.pairwise(t)][:3]
    for gap, base in zip(gaps, (60, 300, 1800), strict=True):
        assert base * 0.9 <= gap <= base * 1.1


async def test_retry_after_is_honoured(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.agent.failure = RateLimited(TARGET.name, "slow down", retry_after=120)
    await trio.sleep(300 + 121)
    t = rig.agent.times("health")
    assert t[1] - t[0] == pytest.approx(120)
    # Rate limiting is an answer, not a transport failure: health is unchanged.
    assert rig.sink.transitions == []


async def test_backoff_resets_after_success(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    agent = rig.agent
    first = start + phase_offset("h" + KEY, 300)
    agent.failure = Unreachable(TARGET.name, "refused")
    await trio.sleep_until(first + 30)
    agent.failure = None  # the retry after 60 s succeeds
    await trio.sleep_until(first + 299)
    agent.failure = Unreachable(TARGET.name, "refused")  # the next poll fails again
    await trio.sleep_until(first + 300 + 61)
    t = agent.times("health")
    assert t == pytest.approx([first, first + 60, first + 300, first + 360])
    assert rig.sink.transitions == []  # two failures in a row never made it unreachable


async def test_refresh_requests_coalesce(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    await rig.start(nursery)
    await trio.sleep(0.5)
    before = len(rig.agents.agents[TARGET.name].times("health")) if rig.agents.agents else 0
    for _ in range(5):
        rig.actor.request_refresh()
    await trio.sleep(0.1)
    agent = rig.agent
    assert len(agent.times("health")) == before + 1
    assert len(agent.times("patches")) >= 1


async def test_paused_actor_parks_and_resumes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(policy=replace(POLICY, paused=True), stored=seen_before())
    await rig.start(nursery)
    await trio.sleep(3600)
    assert rig.fleet.get(7).phase is Phase.PAUSED  # type: ignore[union-attr]
    assert rig.agents.agents[TARGET.name].calls == []
    rig.actor.update_policy(POLICY)
    await trio.sleep(301)
    assert rig.agents.agents[TARGET.name].times("health")


async def test_degraded_agent_and_reboot_detection(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="actors.host")
    rig = Rig(stored=StoredHost(state=polled_state(uptime_seconds=10_000)))
    start = trio.current_time()
    agent = rig.agents(TARGET, POLICY)
    agent.status, agent.crl_status, agent.uptime = "degraded", "expired", 10_100
    first = start + phase_offset("h" + KEY, 300)
    await rig.start(nursery)
    await trio.sleep_until(first + 1)
    snapshot = rig.fleet.get(7)
    assert snapshot is not None
    assert snapshot.health is HealthState.DEGRADED
    assert snapshot.health_reason == "CRL expired"
    assert rig.sink.states[7].health == "degraded"
    assert [(t.to_state, t.reason) for t in rig.sink.transitions] == [("degraded", "CRL expired")]
    boot = rig.sink.states[7].last_boot_at
    assert boot == fake_wall() - dt.timedelta(seconds=1 + 10_100)
    # Uptime grew with time: no reboot, the boot time stays put.
    agent.uptime += 300
    await trio.sleep(300)
    assert rig.sink.states[7].last_boot_at == boot
    assert not [r for r in caplog.records if "rebooted" in r.message]
    # The uptime went back: a reboot, dated from the new uptime; the CRL was renewed meanwhile.
    agent.status, agent.crl_status, agent.uptime = "healthy", "valid", 30
    await trio.sleep(300)
    state = rig.sink.states[7]
    assert state.uptime_seconds == 30
    assert state.last_boot_at == fake_wall() - dt.timedelta(seconds=1 + 30)
    assert state.health == "healthy"
    assert [r.message for r in caplog.records if "rebooted" in r.message] == [
        "host rebooted (uptime 30s)"
    ]


async def test_health_polls_go_on_and_a_death_is_seen_while_a_patch_poll_waits_out_retry_after(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    agent = rig.agents(TARGET, POLICY)
    agent.failures["patches"] = RateLimited(TARGET.name, "busy", retry_after=1500)
    await rig.start(nursery)
    await trio.sleep(1)
    rig.actor.request_refresh()  # health answers, the patch poll is told to come back in 25 min
    await trio.sleep(1)
    assert agent.times("patches") == [start + 1]
    agent.failure = Unreachable(TARGET.name, "connection refused")  # the host dies
    await trio.sleep_until(start + 1 + 1499)
    assert len(agent.times("patches")) == 1  # the patch poll is still waiting...
    assert len(agent.times("health")) >= 4  # ...but health was polled all along
    assert [t.to_state for t in rig.sink.transitions] == ["unreachable"]
    assert rig.fleet.get(7).health is HealthState.UNREACHABLE  # type: ignore[union-attr]


async def test_an_unreachable_host_is_probed_at_its_normal_interval_without_a_new_ladder(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    rig.agents(TARGET, POLICY).failure = Unreachable(TARGET.name, "connection refused")
    first = start + phase_offset("h" + KEY, 300)
    await rig.start(nursery)
    await trio.sleep_until(first + 3000 + 1)
    # The ladder once (R-3.2: three retries), then every 300 s on the host's grid.
    assert rig.agent.times("health") == pytest.approx(
        [first, first + 60, first + 360, first + 2160, first + 2400, first + 2700, first + 3000]
    )
    assert [t.to_state for t in rig.sink.transitions] == ["unreachable"]
    # Back again: the next probe succeeds and the backoff starts from the beginning.
    rig.agent.failure = None
    await trio.sleep(300)
    assert rig.fleet.get(7).health is HealthState.HEALTHY  # type: ignore[union-attr]
    assert len(rig.agent.times("patches")) == 1  # the patch poll owed is made at once


async def test_system_info_errors_stopping_lift_degraded_at_the_next_health_poll(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    policy = replace(POLICY, backoff_s=(10, 10, 10))
    rig = Rig(policy=policy, stored=seen_before())
    start = trio.current_time()
    agent = rig.agents(TARGET, policy)
    agent.failures["system_info"] = AgentRequestError(
        TARGET.name, status=500, code="HTTP_500", message="boom", retryable=True
    )
    first = start + phase_offset("h" + KEY, 300)
    patch_poll = start + phase_offset("p" + KEY, 1800)
    await rig.start(nursery)
    await trio.sleep_until(first + 31)
    assert agent.times("health") == pytest.approx([first, first + 10, first + 20, first + 30])
    assert rig.fleet.get(7).health is HealthState.DEGRADED  # type: ignore[union-attr]
    del agent.failures["system_info"]
    await trio.sleep_until(first + 300 + 1)
    assert first + 300 < patch_poll  # (what is asserted: not lifted by a patch poll)
    assert rig.fleet.get(7).health is HealthState.HEALTHY  # type: ignore[union-attr]
    assert [(t.to_state, t.at) for t in rig.sink.transitions] == [
        ("degraded", fake_wall() - dt.timedelta(seconds=281)),
        ("healthy", fake_wall() - dt.timedelta(seconds=1)),
    ]


async def test_hosts_started_together_spread_their_polls_across_the_interval(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    agents, sink, fleet = FakeFleetAgents(), MemorySink(), FleetState()
    for i in range(50):
        target = HostTarget(100 + i, f"host{i}.example.com", f"192.0.2.{i}", 12443)
        actor = HostActor(target, POLICY, agent_factory=agents, sink=sink, fleet=fleet,
                          rng=random.Random(i), wall=fake_wall)  # fmt: skip
        await nursery.start(actor.run)
    start = trio.current_time()
    await trio.sleep(1.0)
    firsts = [a.times("health")[0] for a in agents.agents.values()]
    assert len(firsts) == 50 and max(firsts) - start <= 1.0  # never polled: all within 1 s
    await trio.sleep(300)
    seconds = sorted(a.times("health")[1] for a in agents.agents.values())
    assert seconds[-1] - seconds[0] > 0.8 * 300  # then spread over the whole interval
    assert max(b - a for a, b in itertools.pairwise(seconds)) < 60


class EndlessJobs:
    """A job store whose every call is a job step that never ends (a 3 h job, in effect)."""

    def __getattr__(self, name: str) -> Any:
        async def forever(*args: object, **kwargs: object) -> None:
            await trio.sleep_forever()

        return forever


async def test_health_polling_goes_on_while_the_job_half_is_busy(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before(), job_store=EndlessJobs())
    start = trio.current_time()
    await rig.start(nursery)
    await trio.sleep(3 * 300 + 1)
    first = start + phase_offset("h" + KEY, 300)
    assert rig.agent.times("health") == pytest.approx([first + k * 300 for k in range(3)])


async def test_a_timing_out_patch_poll_backs_off_on_its_own_ladder_not_after_every_health_poll(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    agent = rig.agents(TARGET, POLICY)
    agent.failures["patches"] = AgentTimeout(TARGET.name, "the agent did not answer in time")
    await rig.start(nursery)
    await trio.sleep(1)
    rig.actor.request_refresh()  # health answers; /patches times out
    await trio.sleep(1)
    [first] = agent.times("patches")
    await trio.sleep_until(first + 2000)
    assert len(agent.times("health")) >= 7  # health goes on every 300 s...
    # ...while the patch poll follows its ladder (60, 300 s…), not every health poll.
    assert agent.times("patches") == pytest.approx([first, first + 60, first + 360], abs=1)
