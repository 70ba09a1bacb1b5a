"""Freshness in the host snapshot (issue 16 point 1): data age, stale deadline, the failing
line's facts (since, retries used of the ladder, next attempt) and the never-contacted state."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from actors.agent_errors import Unreachable
from actors.health import HealthState
from actors.state import HostSnapshot, Phase, condition_of
from actors.timing import phase_offset

from ..fakes import fake_wall
from .test_host_actor import KEY, POLICY, TARGET, Rig, seen_before

GRACE = POLICY.connect_timeout_s + 2 * POLICY.request_timeout_s


def snap(rig: Rig) -> HostSnapshot:
    snapshot = rig.fleet.get(TARGET.host_id)
    assert snapshot is not None
    return snapshot


async def test_a_never_contacted_host_is_unknown_even_while_its_polls_fail(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig()
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.agent.failure = Unreachable(TARGET.name, "connection refused")
    await rig.start(nursery)
    await trio.sleep(2)
    s = snap(rig)
    assert s.condition == "unknown"
    assert s.health_as_of is None and s.stale_after is None
    assert s.failing_since is not None and s.retries_used == 1 and s.retries_total == 3


async def test_a_failing_host_shows_since_when_retries_used_and_next_attempt(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    first = start + phase_offset("h" + KEY, 300)
    await trio.sleep(first - start + 1)  # one good poll
    assert snap(rig).condition == "healthy" and snap(rig).failing_since is None
    polled_at = snap(rig).health_as_of
    assert polled_at is not None
    assert snap(rig).stale_after == polled_at + dt.timedelta(seconds=2 * 300 + GRACE)
    rig.agent.failure = Unreachable(TARGET.name, "connection refused")
    await trio.sleep(300)  # the next poll fails
    s = snap(rig)
    failed_at = fake_wall() - dt.timedelta(seconds=trio.current_time() - (first + 300))
    assert s.condition == "failing"
    assert s.failing_since == pytest.approx(failed_at, abs=dt.timedelta(seconds=0.01))
    assert (s.retries_used, s.retries_total) == (1, 3)
    assert s.next_attempt == pytest.approx(
        failed_at + dt.timedelta(seconds=60), abs=dt.timedelta(seconds=0.01)
    )
    assert s.health_as_of == polled_at  # the data is still the last good poll's
    await trio.sleep(60 + 300)  # two more failures: unreachable
    s = snap(rig)
    assert s.condition == "unreachable" and s.retries_used == 3
    assert s.failing_since == pytest.approx(failed_at, abs=dt.timedelta(seconds=0.01))
    assert s.health_since is not None
    rig.agent.failure = None  # back: the ladder's next retry recovers it, no refresh
    await trio.sleep(1800 + 1)
    s = snap(rig)
    assert s.condition == "healthy" and s.failing_since is None and s.next_attempt is None
    assert s.health_as_of is not None and s.health_as_of > polled_at


async def test_a_restarted_actor_keeps_the_stored_data_age(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    stored = seen_before()
    assert stored.state is not None
    rig = Rig(stored=stored)
    await rig.start(nursery)
    s = snap(rig)
    assert s.health_as_of == stored.state.last_health_poll_at
    assert s.patches_as_of == stored.state.last_patch_poll_at
    assert s.condition == "healthy"


def test_condition_of_paused_and_pending_hosts() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert condition_of(HostSnapshot(1, "h", phase=Phase.PAUSED)) == "unknown"
    paused = HostSnapshot(1, "h", phase=Phase.PAUSED, health=HealthState.HEALTHY, health_as_of=at)
    assert paused.condition == "paused"
    degraded = HostSnapshot(1, "h", health=HealthState.DEGRADED, health_as_of=at)
    assert degraded.condition == "degraded"
