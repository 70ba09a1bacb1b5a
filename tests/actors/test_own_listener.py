"""The manager's own web listener is never an agent, whatever agents.allow_addresses and
agents.allow_ports permit (the demo permits 127.0.0.0/8, so ``localhost`` would register)."""

from __future__ import annotations

import ipaddress

import pytest

from actors import AddressPolicy
from actors.address_policy import parse_networks
from actors.registration import AddressRefused, checked_address

POLICY = AddressPolicy(
    agent_port=12443,
    allow_networks=parse_networks(["127.0.0.0/8"]),
    allow_ports=frozenset({8443}),
    own_addresses=frozenset({ipaddress.IPv4Address("127.0.0.1")}),
    web_port=8443,
)


def test_the_own_web_address_and_port_is_refused_even_when_permitted() -> None:
    assert "own web listener" in (POLICY.refusal("127.0.0.1", 8443) or "")
    assert POLICY.refusal("127.0.0.1", 12443) is None  # an agent beside the manager
    assert POLICY.refusal("127.0.0.2", 8443) is None
    assert POLICY.refusal("127.0.0.1") is None  # no port: the address alone is permitted


async def test_registering_localhost_on_the_web_port_is_refused() -> None:
    with pytest.raises(AddressRefused) as caught:
        await checked_address("localhost", 8443, POLICY, resolve_timeout=2)
    assert "own web listener" in caught.value.message
