"""The fleet-wide connection ramp, against simulated agents over real mTLS on loopback."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.agent_client import AgentClient, ConnectionRamp
from actors.agent_errors import TransportError
from simulator import Fleet

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


async def test_new_connections_queue_at_the_ramp_and_open_connections_never_wait(
    pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(30)
    ramp = ConnectionRamp(2)
    context = pki.client_context()
    clients = [
        AgentClient(a.profile.hostname, a.address, context, port=a.port, ramp=ramp)
        for a in fleet.agents
    ]
    answered: list[str] = []

    async def poll(client: AgentClient) -> None:
        answered.append((await client.health()).status)

    try:
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(poll, client)
        assert answered == ["healthy"] * 30  # no handshake timed out
        assert (ramp.opened, ramp.peak, ramp.in_use) == (30, 2, 0)
        assert ramp.waited > 0
        # The connections stay open (keep-alive): the next requests do not pass the ramp.
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(poll, client)
        assert ramp.opened == 30
    finally:
        for client in clients:
            await client.aclose()


async def test_a_failed_connect_gives_its_slot_back(pki: Pki, start_fleet: Any) -> None:
    fleet: Fleet = await start_fleet(1)
    agent = fleet.agents[0]
    agent.set_faults({"down": True})
    ramp = ConnectionRamp(1)
    async with AgentClient("h", agent.address, pki.client_context(), port=agent.port,
                           ramp=ramp, connect_timeout=2.0) as client:  # fmt: skip
        for _ in range(3):
            with pytest.raises(TransportError):
                await client.health()
    assert ramp.in_use == 0


def test_the_default_ramp_is_sized_from_the_cpu_count() -> None:
    import os

    assert ConnectionRamp.for_this_machine().limit == 16 * (os.cpu_count() or 1)
    assert ConnectionRamp.for_this_machine(5).limit == 5
    with pytest.raises(ValueError, match="at least one slot"):
        ConnectionRamp(0)
