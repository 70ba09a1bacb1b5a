"""The address policy: which addresses and ports may be an agent's (pure, no I/O)."""

from __future__ import annotations

import ipaddress

import pytest

from actors import AddressPolicy
from actors.address_policy import canonical_ipv4, parse_networks
from actors.discovery import DiscoveryError, addresses, parse_range
from actors.registration import RegistrationError, normalise_name

POLICY = AddressPolicy(
    agent_port=12443,
    own_addresses=frozenset({ipaddress.IPv4Address("10.9.9.9")}),
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("10.9.9.9", "own listener"),
        ("::1", "IPv6"),
        ("::", "IPv6"),
        ("::ffff:127.0.0.1", "IPv6"),
        ("2001:db8::1", "IPv6"),
        ("fe80::1", "IPv6"),
    ],
)
def test_every_refused_class_is_refused_with_its_reason(address: str, reason: str) -> None:
    refusal = POLICY.refusal(address)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "172.16.0.1", "8.8.8.8"])
def test_ordinary_addresses_are_accepted(address: str) -> None:
    assert POLICY.refusal(address) is None


def test_refusals_name_the_key_that_permits_them() -> None:
    assert "agents.allow_addresses" in (POLICY.refusal("127.0.0.1") or "")
    assert "agents.allow_ports" in (POLICY.port_refusal(8443) or "")


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "169.254.169.254", "224.0.0.1", "255.255.255.255", "10.9.9.9"]
)
def test_allow_addresses_permits_any_refused_ipv4_class(address: str) -> None:
    policy = AddressPolicy(
        agent_port=12443,
        allow_networks=parse_networks([f"{address}/32"]),
        own_addresses=POLICY.own_addresses,
    )
    assert policy.refusal(address) is None


def test_allow_addresses_never_permits_ipv6() -> None:
    policy = AddressPolicy(agent_port=12443, allow_networks=parse_networks(["0.0.0.0/0"]))
    assert "IPv6" in (policy.refusal("::1") or "")


def test_allowing_a_block_permits_only_that_block() -> None:
    policy = AddressPolicy(agent_port=12443, allow_networks=parse_networks(["127.77.0.0/16"]))
    assert policy.refusal("127.77.3.4") is None
    assert policy.refusal("127.0.0.1") is not None


def test_only_the_agent_port_unless_allow_ports_lists_another() -> None:
    assert POLICY.port_refusal(12443) is None
    assert POLICY.port_refusal(80) is not None
    assert POLICY.port_refusal(0) is not None
    assert POLICY.port_refusal(65536) is not None
    policy = AddressPolicy(agent_port=12443, allow_ports=frozenset({13443}))
    assert policy.port_refusal(13443) is None
    assert policy.port_refusal(8443) is not None


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("169.254.43518", "169.254.169.254"),
    ],
)
def test_odd_spellings_are_normalised_to_the_address_they_reach(
    spelling: str, canonical: str
) -> None:
    assert canonical_ipv4(spelling) == canonical
    assert normalise_name(spelling) == (canonical, True)
    assert POLICY.refusal(normalise_name(spelling)[0]) is not None


@pytest.mark.parametrize("name", ["db01.example.com", "0xfe.example.com", "web-1", "a.b"])
def test_names_are_not_mistaken_for_addresses(name: str) -> None:
    assert canonical_ipv4(name) is None
    assert normalise_name(name) == (name, False)


def test_a_malformed_address_is_still_an_error() -> None:
    with pytest.raises(RegistrationError, match="malformed IP address"):
        normalise_name("1.2.3.4.5")


def test_a_range_made_only_of_refused_addresses_cannot_be_scanned() -> None:
    with pytest.raises(DiscoveryError, match=r"every address of 169\.254\.169\.0/24 is refused"):
        parse_range("169.254.169.0/24", min_prefix_len=16, policy=POLICY)
    with pytest.raises(DiscoveryError, match="loopback"):
        parse_range("127.0.0.0/24", min_prefix_len=16, policy=POLICY)


def test_a_scan_skips_the_refused_addresses_of_its_range() -> None:
    network = parse_range("10.9.9.8/30", min_prefix_len=16, policy=POLICY)
    assert addresses(network, POLICY) == ["10.9.9.10"]  # 10.9.9.9 is the manager's own
    partial = AddressPolicy(agent_port=1, allow_networks=parse_networks(["127.5.0.0/30"]))
    assert addresses(ipaddress.IPv4Network("127.5.0.0/29"), partial) == [
        "127.5.0.1",
        "127.5.0.2",
        "127.5.0.3",
    ]


def test_a_range_clear_of_refused_blocks_skips_the_per_address_check() -> None:
    assert POLICY.refuses_none_of(ipaddress.IPv4Network("192.168.0.0/16"))
    assert not POLICY.refuses_none_of(ipaddress.IPv4Network("10.9.0.0/16"))
    assert not POLICY.refuses_none_of(ipaddress.IPv4Network("169.254.0.0/24"))
    assert len(addresses(ipaddress.IPv4Network("192.168.0.0/16"), POLICY)) == 65534


def test_the_fast_check_agrees_with_the_refusal_for_every_address_of_the_edges() -> None:
    policy = AddressPolicy(
        agent_port=1,
        allow_networks=parse_networks(["127.5.0.0/30", "169.254.169.254/32"]),
        own_addresses=frozenset({ipaddress.IPv4Address("10.9.9.9")}),
    )
    edges = ["0.0.0.0/22", "127.5.0.0/24", "169.254.169.0/24", "10.9.9.0/24", "223.255.254.0/23"]
    edges += ["239.255.254.0/23", "255.255.254.0/23", "126.255.254.0/23"]
    for cidr in edges:
        for ip in ipaddress.IPv4Network(cidr):
            assert policy.permits(ip) == (policy.refusal(str(ip)) is None), ip


def test_a_range_inside_a_refused_block_is_refused_without_looking_at_each_address() -> None:
    assert POLICY.refuses_all_of(ipaddress.IPv4Network("127.0.0.0/16"))
    assert POLICY.refuses_all_of(ipaddress.IPv4Network("169.254.0.0/16"))
    assert not POLICY.refuses_all_of(ipaddress.IPv4Network("10.9.9.0/24"))
    partial = AddressPolicy(agent_port=1, allow_networks=parse_networks(["127.0.5.0/24"]))
    assert not partial.refuses_all_of(ipaddress.IPv4Network("127.0.0.0/16"))
    assert parse_range("127.0.0.0/16", min_prefix_len=16, policy=partial).prefixlen == 16
