"""A patch poll that fails while health polls pass is published with its own facts (issue 16
point 1, review N4): since when, retries used of the ladder, the next attempt; a successful
patch poll clears them. The web says "patch poll failing since …" from them."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from actors.agent_errors import AgentTimeout
from actors.state import HostSnapshot
from actors.timing import phase_offset
from web.freshness import host_view
from web.serialize import to_json

from ..fakes import fake_wall
from .test_host_actor import KEY, POLICY, TARGET, Rig, seen_before


def snap(rig: Rig) -> HostSnapshot:
    snapshot = rig.fleet.get(TARGET.host_id)
    assert snapshot is not None
    return snapshot


async def test_a_failing_patch_poll_publishes_since_when_retries_and_next_attempt(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.agent.failures["patches"] = AgentTimeout(TARGET.name, "/patches timed out")
    await rig.start(nursery)
    first_patch = start + phase_offset("p" + KEY, POLICY.patch_interval_s)
    await trio.sleep(first_patch - start + 1)  # the first patch poll has failed
    s = snap(rig)
    failed_at = fake_wall() - dt.timedelta(seconds=trio.current_time() - first_patch)
    assert s.patch_failing_since == pytest.approx(failed_at, abs=dt.timedelta(seconds=0.5))
    assert (s.patch_retries_used, s.retries_total) == (1, 3)
    assert s.patch_next_attempt is not None and s.patch_next_attempt > fake_wall()
    assert s.failing_since is None  # the health poll is fine
    view = host_view(to_json(s), now=fake_wall())
    assert "patch poll failing since" in view.why and "1 of 3 retries" in view.why
    assert "next " in view.why

    del rig.agent.failures["patches"]
    await trio.sleep(POLICY.patch_interval_s + 1)  # a retry (or the next poll) succeeds
    s = snap(rig)
    assert s.patch_failing_since is None and s.patch_next_attempt is None
    assert s.patch_retries_used == 0 and s.patches_as_of is not None
    assert "patch poll failing" not in host_view(to_json(s), now=fake_wall()).why
