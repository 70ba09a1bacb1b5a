"""Registering hosts through the handle: the address policy, duplicates, bounded DNS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from actors import AddressPolicy, AddressRefused, HostAlreadyRegistered, RegistrationError
from actors.registration import checked_address
from simulator import Fleet

from .conftest import FAST_POLICY, MakeManager

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("localhost", "localhost resolves to 127.0.0.1: 127.0.0.1 is a loopback address"),
        ("127.0.0.1", "loopback"),
        ("0x7f000001", "127.0.0.1 is a loopback address"),
        ("2130706433", "127.0.0.1 is a loopback address"),
        ("127.1", "127.0.0.1 is a loopback address"),
        ("0.0.0.0", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.251", "multicast"),
        ("::1", "IPv6"),
        ("::", "IPv6"),
    ],
)
async def test_registration_refuses_addresses_of_the_policy(
    make_manager: MakeManager, name: str, reason: str
) -> None:
    manager = await make_manager("")
    with pytest.raises(AddressRefused, match=reason) as caught:
        await manager.handle.register_host(name)
    assert caught.value.field == "name"
    assert "agents.allow_addresses" in caught.value.message or "IPv6" in reason
    assert await manager.db.run(lambda c: c.execute("SELECT count(*) FROM hosts").fetchone()) == (
        0,
    )


async def test_registration_refuses_the_managers_own_listener_address(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager('[server]\nbind = "10.1.2.3:8443"\nip_addresses = ["10.4.5.6"]\n')
    for address in ("10.1.2.3", "10.4.5.6"):
        with pytest.raises(AddressRefused, match="this manager's own listener"):
            await manager.handle.register_host(address)


async def test_registration_refuses_ports_other_than_the_agent_port(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager("")
    with pytest.raises(AddressRefused, match="not the agent port 12443") as caught:
        await manager.handle.register_host("10.20.30.40", port=80)
    assert caught.value.field == "port"
    allowed = await make_manager("[agents]\nallow_ports = [13443]\n")
    row = await allowed.handle.register_host("10.20.30.41", port=13443)
    assert (row.address, row.port) == ("10.20.30.41", 13443)


async def test_allow_addresses_admits_loopback_agents_and_duplicates_are_typed(
    make_manager: MakeManager, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(1)
    agent = fleet.agents[0]
    manager = await make_manager(FAST_POLICY)  # allow_addresses = ["127.0.0.0/8"]
    row = await manager.handle.register_host(agent.address, port=agent.port)
    assert row.address == agent.address
    with pytest.raises(HostAlreadyRegistered, match="already registered") as caught:
        await manager.handle.register_host(agent.address, port=agent.port)
    assert caught.value.field == "name"
    local = await manager.handle.register_host("localhost")
    assert local.address == "127.0.0.1"


class _SilentResolver(trio.abc.HostnameResolver):
    """A DNS server that never answers (the system boundary, not our code)."""

    async def getaddrinfo(self, *args: object, **kwargs: object) -> list[object]:  # type: ignore[override]
        await trio.sleep_forever()
        raise AssertionError

    async def getnameinfo(self, *args: object) -> tuple[str, str]:
        raise NotImplementedError


async def test_a_name_that_does_not_resolve_in_time_is_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trio.socket.set_custom_hostname_resolver(_SilentResolver())
    started = trio.current_time()
    with pytest.raises(RegistrationError, match=r"did not resolve within 2 s") as caught:
        await checked_address(
            "db01.example.com", 12443, AddressPolicy(agent_port=12443), resolve_timeout=2.0
        )
    assert trio.current_time() - started == pytest.approx(2.0)
    assert caught.value.field == "name"
    assert "agents.resolve_timeout_s" in caught.value.message
