"""A host rebooting for a job of ours is not reported unreachable meanwhile (virtual time)."""

from __future__ import annotations

import trio
import trio.testing

from actors.agent_errors import Unreachable
from actors.timing import phase_offset

from .test_host_actor import KEY, POLICY, TARGET, Rig, seen_before


async def test_a_host_rebooting_for_our_job_is_not_marked_unreachable_while_it_is_down(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rig = Rig(stored=seen_before())
    start = trio.current_time()
    await rig.start(nursery)
    rig.agents.agents.setdefault(TARGET.name, rig.agents(TARGET, POLICY))
    rig.actor._job_report(1, "rebooting", "job 5")  # what the job half reports
    rig.agent.failure = Unreachable(TARGET.name, "connection refused")
    first = start + phase_offset("h" + KEY, 300)
    await trio.sleep(first - start + 60 + 300 + 1800 + 1)  # the whole ladder, failing
    assert len(rig.agent.times("health")) >= 3
    assert [t.to_state for t in rig.sink.transitions] == []
    assert rig.actor.snapshot.summary == "polling: healthy · job 5 rebooting"
    # Once the job is over, the same failures count again.
    rig.actor._job_report(1, "failed", "")
    await trio.sleep(60 + 300 + 1800 + 300)
    assert [t.to_state for t in rig.sink.transitions] == ["unreachable"]
