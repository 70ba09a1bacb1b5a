"""CIDR discovery (R-2.2): find the agents listening in an IPv4 range.

An address counts only when a TCP connect succeeds *and* an mTLS ``GET /health`` plus
``GET /api/v1/system/info`` answer like an agent. Probes run with bounded concurrency; progress
(probed / total / found) is published after every address; cancelling the scan stops it.
Addresses the ``AddressPolicy`` refuses are never probed (a range made only of them is an error).

Errors: ``DiscoveryError`` (a ``ValueError``) is the root; ``DiscoveryBusy`` means the limit of
concurrent scans (``discovery.max_concurrent_scans``) is reached.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import trio

from .address_policy import AddressPolicy
from .agent_client import AgentClient
from .agent_errors import AgentError


class DiscoveryError(ValueError):
    """The range cannot be scanned (the message says why)."""


class DiscoveryBusy(DiscoveryError):
    """As many scans as ``discovery.max_concurrent_scans`` allows are running; try later."""


@dataclass(frozen=True)
class Found:
    address: str
    hostname: str
    os: str
    agent_version: str


@dataclass(frozen=True)
class ScanProgress:
    cidr: str
    total: int
    probed: int
    found: int
    done: bool = False
    cancelled: bool = False
    failed: bool = False
    error: str = ""


@dataclass(frozen=True)
class ScanReport:
    """A scan as callers see it: live while it runs, read back from the database after."""

    scan_id: int
    progress: ScanProgress
    found: tuple[Found, ...]


def parse_range(
    text: str, *, min_prefix_len: int, policy: AddressPolicy | None = None
) -> ipaddress.IPv4Network:
    """Validate an operator's CIDR: IPv4, not larger than ``/min_prefix_len``, and (with a
    ``policy``) holding at least one address the policy permits."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise DiscoveryError(f"{text!r} is not a CIDR range such as 10.0.0.0/24") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise DiscoveryError("only IPv4 ranges can be scanned (the agent listens on IPv4 only)")
    if network.prefixlen < min_prefix_len:
        size = 2 ** (32 - min_prefix_len)
        raise DiscoveryError(
            f"{network} has {network.num_addresses} addresses; the limit is /{min_prefix_len} "
            f"({size} addresses, discovery.min_prefix_len)"
        )
    if policy is not None and (
        policy.refuses_all_of(network) or not any(map(policy.permits, _hosts(network)))
    ):
        reason = policy.refusal(str(network.network_address)) or "refused"
        raise DiscoveryError(f"every address of {network} is refused: {reason}")
    return network


def addresses(network: ipaddress.IPv4Network, policy: AddressPolicy | None = None) -> list[str]:
    """The addresses a scan of ``network`` probes: its hosts, less what ``policy`` refuses."""
    hosts = _hosts(network)
    if policy is None or policy.refuses_none_of(network):
        return [str(a) for a in hosts]
    return [str(a) for a in hosts if policy.permits(a)]


def _hosts(network: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Address]:
    return network.hosts() if network.prefixlen < 31 else iter(network)


async def probe(
    address: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    connect_timeout: float,
    request_timeout: float = 5.0,
) -> Found | None:
    """One address: TCP connect, then an mTLS health + system info. None if not an agent."""
    connected = False
    with trio.move_on_after(connect_timeout):
        try:
            stream = await trio.open_tcp_stream(address, port)
        except OSError:
            return None
        await stream.aclose()
        connected = True
    if not connected:
        return None
    client = AgentClient(
        address,
        address,
        ssl_context,
        port=port,
        request_timeout=request_timeout,
        connect_timeout=connect_timeout,
    )
    try:
        health = await client.health()
        info = await client.system_info()
    except AgentError:
        return None
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
    return Found(address, info.hostname, info.os, health.version)


async def scan(
    network: ipaddress.IPv4Network,
    *,
    port: int,
    ssl_context: ssl.SSLContext,
    concurrency: int,
    connect_timeout: float,
    on_progress: Callable[[ScanProgress], None],
    on_found: Callable[[Found], None],
    policy: AddressPolicy | None = None,
    targets: Sequence[str] | None = None,
) -> list[Found]:
    """Probe every address of ``network`` that ``policy`` permits (or ``targets``, when the
    caller computed them already); returns what was found, in address order.

    At most ``concurrency`` probes (and tasks) exist at once, so a /16 never means 65,534 tasks
    started in one go.
    """
    if targets is None:
        targets = addresses(network, policy)
    total = len(targets)
    found: list[Found] = []
    probed = 0
    slots = trio.Semaphore(concurrency)
    cidr = str(network)
    on_progress(ScanProgress(cidr, total, 0, 0))

    async def one(address: str) -> None:
        nonlocal probed
        try:
            result = await probe(address, port, ssl_context, connect_timeout=connect_timeout)
        finally:
            slots.release()
        probed += 1
        if result is not None:
            found.append(result)
            on_found(result)
        on_progress(ScanProgress(cidr, total, probed, len(found)))

    async with trio.open_nursery() as nursery:
        for address in targets:
            await slots.acquire()
            nursery.start_soon(one, address)
    found.sort(key=lambda f: ipaddress.IPv4Address(f.address))
    on_progress(ScanProgress(cidr, total, probed, len(found), done=True))
    return found
