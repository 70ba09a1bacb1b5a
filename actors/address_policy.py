"""Which addresses and ports the manager may talk to as agents (issue 9, item 7). Pure, no trio.

Registration, ``register_found`` and discovery all ask ``AddressPolicy.refusal`` before any
packet leaves: an operator (or anyone with a login) must not be able to use the manager to probe
its own machine, the cloud metadata service or broadcast/multicast groups, and read the answer
from a host's last error. Refused by default:

- loopback (127.0.0.0/8), "this network" (0.0.0.0/8, including the unspecified 0.0.0.0),
- link-local (169.254.0.0/16, including the metadata address 169.254.169.254),
- multicast (224.0.0.0/4), reserved (240.0.0.0/4) and the limited broadcast 255.255.255.255,
- the manager's own listener addresses (``server.bind`` and ``server.ip_addresses``),
- any IPv6 address (the agent listens on IPv4 only),
- ports other than ``agents.port``.

``agents.allow_addresses`` (CIDRs) re-admits IPv4 addresses, ``agents.allow_ports`` other ports.
Odd spellings (``0x7f000001``, ``2130706433``, ``127.1``) are normalised the way the C resolver
would read them before they are checked (``canonical_ipv4``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from settings import Config

# inet_aton's alphabet: decimal, octal and hex parts separated by dots (at most four parts).
_INET_ATON = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")

_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "an unspecified ('this network') address"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "the broadcast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "a reserved address"),
)
_REFUSED_RANGES = tuple(
    (int(network.network_address), int(network.broadcast_address)) for network, _ in _REFUSED
)


def canonical_ipv4(text: str) -> str | None:
    """``text`` as a dotted quad if the C resolver would read it as an IPv4 address, else None.

    ``inet_aton`` accepts ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1``, and
    ``getaddrinfo`` follows it, so such a "name" reaches the same address as its canonical form.
    """
    name = text.strip().lower()
    if not _INET_ATON.match(name):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(name))
    except OSError:
        return None


@dataclass(frozen=True)
class AddressPolicy:
    """The addresses and ports agents may have. Build with ``from_config``."""

    agent_port: int
    allow_networks: tuple[ipaddress.IPv4Network, ...] = ()
    allow_ports: frozenset[int] = frozenset()
    own_addresses: frozenset[ipaddress.IPv4Address] = frozenset()
    web_port: int | None = None  # the manager's own web listener: never an agent, even if allowed

    @classmethod
    def from_config(cls, config: Config) -> AddressPolicy:
        host, _, port = config.server.bind.rpartition(":")
        own = {host.strip("[]"), *config.server.ip_addresses}
        return cls(
            agent_port=config.agents.port,
            allow_networks=parse_networks(config.agents.allow_addresses),
            allow_ports=frozenset(config.agents.allow_ports),
            own_addresses=frozenset(_ipv4s(own)),
            web_port=int(port) if port.isdigit() else None,
        )

    def allowed_explicitly(self, address: ipaddress.IPv4Address) -> bool:
        return any(address in network for network in self.allow_networks)

    @functools.cached_property
    def _allowed_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(
            (int(n.network_address), int(n.broadcast_address)) for n in self.allow_networks
        )

    def permits(self, ip: ipaddress.IPv4Address) -> bool:
        """``refusal(str(ip)) is None``, fast enough for every address of a /16 scan."""
        value = int(ip)
        if any(low <= value <= high for low, high in self._allowed_ranges):
            return True
        if any(low <= value <= high for low, high in _REFUSED_RANGES):
            return False
        return ip not in self.own_addresses

    def refusal(self, address: str, port: int | None = None) -> str | None:
        """Why ``address`` (an IP literal) may not be an agent's address; None if it may.
        With ``port``, the manager's own web listener (address and port) is refused even when
        ``agents.allow_addresses`` and ``agents.allow_ports`` permit both."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address):
            return f"{ip} is an IPv6 address; the agent listens on IPv4 only"
        if port is not None and port == self.web_port and self._is_own(ip):
            return f"{ip}:{port} is this manager's own web listener, not an agent"
        if self.allowed_explicitly(ip):
            return None
        hint = " (permit it with agents.allow_addresses)"
        for network, what in _REFUSED:
            if ip in network:
                return f"{ip} is {what}{hint}"
        if ip in self.own_addresses:
            return f"{ip} is an address of this manager's own listener{hint}"
        return None

    def _is_own(self, ip: ipaddress.IPv4Address) -> bool:
        if ip in self.own_addresses:
            return True
        # Bound to every address (0.0.0.0): its loopback addresses are ours too.
        return ip.is_loopback and any(own.is_unspecified for own in self.own_addresses)

    def refuses_none_of(self, network: ipaddress.IPv4Network) -> bool:
        """True if no address of ``network`` is refused (lets a scan skip per-address checks)."""
        if any(network.subnet_of(allowed) for allowed in self.allow_networks):
            return True
        if any(ip in network for ip in self.own_addresses):
            return False
        return not any(network.overlaps(refused) for refused, _ in _REFUSED)

    def refuses_all_of(self, network: ipaddress.IPv4Network) -> bool:
        """True if ``network`` lies inside one refused block and no allowed one touches it (a
        shortcut; False does not mean that some address is permitted)."""
        if any(network.overlaps(allowed) for allowed in self.allow_networks):
            return False
        return any(network.subnet_of(refused) for refused, _ in _REFUSED)

    def port_refusal(self, port: int) -> str | None:
        """Why agents may not be reached on ``port``; None if they may."""
        if not 1 <= port <= 65535:
            return "must be between 1 and 65535"
        if port == self.agent_port or port in self.allow_ports:
            return None
        return f"{port} is not the agent port {self.agent_port} (permit it with agents.allow_ports)"


def parse_networks(texts: Iterable[str]) -> tuple[ipaddress.IPv4Network, ...]:
    """CIDRs of ``agents.allow_addresses`` (validated by the loader; IPv6 entries are ignored)."""
    networks = []
    for text in texts:
        network = ipaddress.ip_network(text.strip(), strict=False)
        if isinstance(network, ipaddress.IPv4Network):
            networks.append(network)
    return tuple(networks)


def _ipv4s(texts: Iterable[str]) -> list[ipaddress.IPv4Address]:
    result = []
    for text in texts:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue  # a name: resolving it here would be I/O; the SAN addresses cover it
        if isinstance(ip, ipaddress.IPv4Address) and not ip.is_unspecified:
            result.append(ip)
    return result


__all__ = ["AddressPolicy", "canonical_ipv4", "parse_networks"]
