"""The shared agent transport: one httpx client, a connection pool per host, one mTLS context."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.agent_client import AgentClient, AgentTransport, ConnectionRamp
from actors.agent_errors import TransportError
from simulator import Fleet, SimAgent

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


def shared_client(transport: AgentTransport, agent: SimAgent, **kwargs: Any) -> AgentClient:
    return AgentClient(
        agent.profile.hostname,
        agent.address,
        transport.ssl_context,
        port=agent.port,
        transport=transport,
        **kwargs,
    )


async def test_two_hosts_on_one_transport_one_down_the_other_keeps_being_polled(
    pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    transport = AgentTransport(pki.client_context())
    down, up = (shared_client(transport, a, connect_timeout=1.0) for a in fleet.agents)
    assert transport.pools == 2
    assert (await down.health()).status and (await up.health()).status
    fleet.agents[0].set_faults({"down": True})
    for _ in range(3):
        with pytest.raises(TransportError):
            await down.health()
        assert (await up.health()).status  # the other host's pool is not affected
        assert (await up.patches()) is not None
    await down.aclose()
    assert transport.pools == 1  # the down host's pool closed with its last client
    assert (await up.health()).status
    await up.aclose()
    assert transport.pools == 0
    await transport.aclose()


async def test_the_per_host_connection_limit_holds_on_the_shared_transport(
    pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    ramp = ConnectionRamp(8)  # counts the connections opened
    transport = AgentTransport(pki.client_context(), ramp=ramp)
    first, second = (shared_client(transport, a, max_connections=1) for a in fleet.agents)
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(first.packages)
            nursery.start_soon(second.packages)
    assert ramp.opened == 2  # one connection per host, each used by its six requests in turn
    await first.aclose()
    await second.aclose()
    await transport.aclose()


async def test_a_replaced_client_keeps_the_hosts_connections_for_its_successor(
    pki: Pki, start_fleet: Any
) -> None:
    """A policy change replaces an actor's client: the host's pool (and its open connection)
    stays for the new client."""
    fleet: Fleet = await start_fleet(1)
    ramp = ConnectionRamp(8)
    transport = AgentTransport(pki.client_context(), ramp=ramp)
    old = shared_client(transport, fleet.agents[0])
    await old.health()
    new = shared_client(transport, fleet.agents[0])
    await old.aclose()
    await new.health()
    assert ramp.opened == 1
    await new.aclose()
    await transport.aclose()


async def test_idle_connections_are_closed_and_the_next_request_opens_a_new_one(
    pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    ramp = ConnectionRamp(8)
    transport = AgentTransport(pki.client_context(), ramp=ramp, keepalive_expiry=0.0)
    idle, busy = (shared_client(transport, a) for a in fleet.agents)
    await idle.health()
    await busy.health()
    assert await transport.close_idle() == 2  # both unused for keepalive_expiry (0 s here)
    assert await transport.close_idle() == 0  # nothing used since
    assert transport.pools == 2  # both hosts still have their clients ...
    assert (transport.open_pools, transport.open_connections()) == (0, 0)  # ... at rest: no pool
    await idle.health()
    assert ramp.opened == 3  # a new connection for the host whose connection was closed
    assert transport.open_pools == 1
    await idle.aclose()
    await busy.aclose()
    await transport.aclose()


async def test_closing_idle_pools_survives_a_host_detached_while_another_pool_closes(
    pki: Pki, start_fleet: Any
) -> None:
    """Closing a pool awaits: a host detached meanwhile (its actor stopped) was a KeyError
    that ended the whole round, leaving the other idle connections open."""
    fleet: Fleet = await start_fleet(3)
    transport = AgentTransport(pki.client_context())
    clients = [shared_client(transport, a) for a in fleet.agents]
    for client in clients:
        await client.health()
    assert transport.open_connections() == 3
    transport.keepalive_expiry = 0.0  # all idle now (their connections still open)
    first = clients[0]._pool
    real = transport._pools[first]

    class DetachingWhileClosing:
        """The first host's real pool; while it closes, the second host is detached."""

        async def aclose(self) -> None:
            await clients[1].aclose()
            await real.aclose()

    transport._pools[first] = DetachingWhileClosing()  # type: ignore[assignment]
    closed = await transport.close_idle()
    assert closed == 2
    assert (transport.open_pools, transport.open_connections()) == (0, 0)
    for client in (clients[0], clients[2]):
        await client.aclose()
    await transport.aclose()
