"""A fleet of simulated agents in one process: certificates, listeners, faults, control.

Each agent listens on its own loopback address (``127.77.0.1`` upwards by default, port 12443)
with its own server certificate from our CA, or, with ``port = 0``, all agents share one address
on distinct ports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import resource
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import trio
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import CertificateAuthority, CertKind, agent_server_context

from .agent import SimAgent
from .catalog import PROFILES, generate_profile, hostname_of
from .model import FaultError, Faults

log = logging.getLogger(__name__)


class ScenarioError(ValueError):
    """A scenario file or control command that cannot be used (names the key)."""


class AgentListenError(Exception):
    """A simulated agent cannot listen on its address (taken by another simulator or demo, or
    not an address of this machine)."""

    def __init__(self, address: str, port: int, reason: str) -> None:
        super().__init__(f"a simulated agent cannot listen on {address}:{port}: {reason}")
        self.address = address
        self.port = port
        self.reason = reason


@dataclass(frozen=True)
class FleetSpec:
    count: int = 50
    seed: int = 1
    base_address: str = "127.77.0.1"
    port: int = 12443  # 0: every agent on base_address with its own ephemeral port
    time_scale: float = 1.0
    san: str = "ip"  # "ip" (IP SAN), "ip+name" (IP and hostname), "none" (no SAN, like CA_SETUP.md)
    addresses: tuple[str, ...] = ()  # explicit addresses instead of base_address + i
    ws_ping_s: float = 5.0  # WebSocket ping interval (the agent's is 5 s)
    ws_timeout_s: float = 10.0  # drop a WebSocket client silent for this long (agent: 10 s)
    profile: str = "small"  # package lists: "small" (tests, demo) or "realistic" (scale work)
    # Send CVE ids in /patches (realistic profile's security patches): ahead of the real agent,
    # which sends [] today (agent-api.md §3.10).
    cve_ids: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.cve_ids, bool):
            raise ScenarioError(f"fleet.cve_ids: expected true or false, not {self.cve_ids!r}")
        if self.profile not in PROFILES:
            raise ScenarioError(
                f"fleet.profile: unknown profile {self.profile!r} (known: {', '.join(PROFILES)})"
            )

    def address_list(self) -> list[str]:
        if self.addresses:
            return list(self.addresses)
        if self.port == 0:
            return [self.base_address] * self.count
        base = int(ipaddress.IPv4Address(self.base_address))
        found: list[str] = []
        offset = 0
        while len(found) < self.count:
            address = ipaddress.IPv4Address(base + offset)
            offset += 1
            if address not in ipaddress.IPv4Network("127.0.0.0/8"):
                raise ScenarioError("the fleet ran past 127.255.255.255; lower fleet.count")
            if address.packed[-1] not in (0, 255):
                found.append(str(address))
        return found


@dataclass
class Scenario:
    spec: FleetSpec
    fleet_faults: dict[str, Any] = field(default_factory=dict)
    agent_faults: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_scenario(path: Path) -> Scenario:
    """Parse a TOML scenario: ``[fleet]``, ``[faults.all]``, ``[faults."127.77.0.5"]``."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    unknown = set(data) - {"fleet", "faults"}
    if unknown:
        raise ScenarioError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    known = {f.name: f for f in fields(FleetSpec)}
    fleet = dict(data.get("fleet", {}))
    for key in fleet:
        if key not in known:
            raise ScenarioError(f"{path}: fleet.{key}: unknown key")
    if "addresses" in fleet:
        fleet["addresses"] = tuple(fleet["addresses"])
    try:
        spec = FleetSpec(**fleet)
    except (TypeError, ScenarioError) as exc:
        raise ScenarioError(f"{path}: fleet: {exc}") from None
    faults = dict(data.get("faults", {}))
    scenario = Scenario(spec, fleet_faults=faults.pop("all", {}), agent_faults=faults)
    for target, values in [("all", scenario.fleet_faults), *scenario.agent_faults.items()]:
        try:
            Faults().update(dict(values))
        except FaultError as exc:
            raise ScenarioError(f"{path}: faults.{target}: {exc}") from None
    return scenario


def parse_whitelist(text: str) -> list[str]:
    """Entries of a whitelist YAML in the agent's format (``entries:`` list). Comment and
    empty strings are skipped; hostnames are resolved once to their first IPv4; a malformed
    IP/CIDR makes the whole list deny-all, as on the real agent."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ScenarioError(f"whitelist is not valid YAML: {exc}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ScenarioError("whitelist needs an 'entries' list")
    result: list[str] = []
    for entry in entries:
        value = str(entry).strip()
        if not value or value.startswith("#"):
            continue
        if any(c.isalpha() for c in value) and "/" not in value:
            try:
                value = socket.gethostbyname(value)
            except OSError:
                log.warning("whitelist entry %s does not resolve; skipped", value)
                continue
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            log.error("whitelist entry %r is malformed: denying everyone", value)
            return ["!malformed"]
        result.append(value)
    return result


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fleet:
    """``await nursery.start(fleet.run)`` starts every agent; returns when all listen."""

    def __init__(self, ca_dir: Path, state_dir: Path, spec: FleetSpec) -> None:
        self.ca_dir = ca_dir
        self.state_dir = state_dir
        self.spec = spec
        self.agents: list[SimAgent] = []
        self._contexts: dict[int, tuple[ssl.SSLContext, ssl.SSLContext]] = {}
        self._cert_files: list[Path] = []
        self._reject_ctx: ssl.SSLContext | None = None
        self._mutated = trio.Event()

    def _mutation(self) -> None:
        self._mutated.set()
        self._mutated = trio.Event()

    async def wait_until(self, predicate: Callable[[list[SimAgent]], bool]) -> None:
        """Wait until ``predicate(agents)`` holds, re-checked after every mutating request."""
        while not predicate(self.agents):
            await self._mutated.wait()

    @property
    def root_path(self) -> Path:
        return self.ca_dir / "root.crt"

    @property
    def crl_path(self) -> Path:
        return self.ca_dir / "crl.pem"

    def by_address(self, address: str) -> SimAgent:
        for agent in self.agents:
            if agent.address == address or f"{agent.address}:{agent.port}" == address:
                return agent
        raise ScenarioError(f"no simulated agent at {address}")

    def select(self, target: str | Sequence[str]) -> list[SimAgent]:
        if target == "all":
            return list(self.agents)
        targets = [target] if isinstance(target, str) else list(target)
        return [self.by_address(t) for t in targets]

    # -- certificates -------------------------------------------------------------------------

    def _issue_certificates(self) -> None:
        """Issue (or reuse) one server certificate per agent. Blocking: runs in a thread."""
        ca = CertificateAuthority(self.ca_dir)
        fingerprint = hashlib.sha256(ca.root_pem.encode()).hexdigest()[:16]
        directory = self.state_dir / "certs" / f"{fingerprint}-{self.spec.san}"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        self._cert_files = []
        for index, address in enumerate(self.spec.address_list()):
            key = address if self.spec.port != 0 else f"{address}-{index}"
            path = directory / f"{key}.pem"
            if not _still_valid(path):
                hostname = hostname_of(index, self.spec.seed, self.spec.profile)
                names = {"ip": [address], "ip+name": [address, hostname],
                         "none": []}[self.spec.san]  # fmt: skip
                issued = ca.issue(CertKind.AGENT_SERVER, hostname, names)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(issued.record.cert_pem + issued.key_pem)
                tmp.chmod(0o600)
                tmp.replace(path)
            self._cert_files.append(path)
        self._reject_ctx = (
            _reject_everyone_context(self._cert_files[0]) if self._cert_files else None
        )

    def _build_contexts(self) -> None:
        crl = self.crl_path if self.crl_path.exists() else None
        contexts: dict[int, tuple[ssl.SSLContext, ssl.SSLContext]] = {}
        for index, path in enumerate(self._cert_files):
            ctx = agent_server_context(self.root_path, path, path, crl)
            assert self._reject_ctx is not None
            contexts[index] = (ctx, self._reject_ctx)
        self._contexts = contexts

    async def reload_crl(self) -> None:
        """Re-read ``crl.pem`` (the real agent re-reads it hourly and on refresh)."""
        await trio.to_thread.run_sync(self._build_contexts)

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Fleet] = trio.TASK_STATUS_IGNORED) -> None:
        raise_fd_limit()
        await trio.to_thread.run_sync(self._issue_certificates)
        await trio.to_thread.run_sync(self._build_contexts)
        addresses = self.spec.address_list()
        self.agents = [
            SimAgent(
                address,
                self.spec.port,
                generate_profile(index, self.spec.seed, self.spec.profile),
                _context_getter(self, index),
                time_scale=self.spec.time_scale,
                seed=self.spec.seed * 7919 + index,
            )  # fmt: skip
            for index, address in enumerate(addresses)
        ]
        for agent in self.agents:
            agent.on_mutation = self._mutation
            agent.send_cve_ids = self.spec.cve_ids
            agent.ws_heartbeat = (self.spec.ws_ping_s, self.spec.ws_timeout_s)
        async with trio.open_nursery() as nursery:
            for agent in self.agents:
                try:
                    await nursery.start(agent.run)
                except* OSError as group:
                    reason = next(
                        (e.strerror or str(e) for e in _leaves(group) if isinstance(e, OSError)),
                        "cannot listen",
                    )
                    raise AgentListenError(agent.address, agent.port, reason) from None
            log.info("simulating %d agents", len(self.agents))
            task_status.started(self)

    def apply_faults(self, target: str | Sequence[str], values: dict[str, Any]) -> int:
        agents = self.select(target)
        for agent in agents:
            agent.set_faults(dict(values))
        return len(agents)

    def status(self) -> list[dict[str, Any]]:
        return [
            {"address": a.address, "port": a.port, "hostname": a.profile.hostname, "up": a.up,
             "os": a.profile.os, "distro": a.profile.distro_id, "kernel": a.profile.kernel,
             "packages": len(a.profile.installed), "pending_patches": len(a.profile.upgradable),
             "jobs": len(a.jobs), "requests": a.requests_served}
            for a in self.agents
        ]  # fmt: skip


def _leaves(error: BaseException) -> Iterable[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _context_getter(fleet: Fleet, index: int) -> Any:
    return lambda: fleet._contexts[index]


def _still_valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _reject_everyone_context(cert_file: Path) -> ssl.SSLContext:
    """A server context that trusts a CA nobody has: every client certificate is refused in
    the handshake, exactly as an agent whose CRL became invalid does."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "nobody")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert_file), str(cert_file))
    ctx.load_verify_locations(cadata=cert.public_bytes(serialization.Encoding.PEM).decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def describe(fleet: Fleet, limit: int = 5) -> Iterable[str]:
    spec = fleet.spec
    count = len(fleet.agents)
    yield f"{count} simulated agents ({spec.profile} profile, time scale {spec.time_scale})"
    for agent in fleet.agents[:limit]:
        p = agent.profile
        yield (f"  https://{agent.address}:{agent.port}  {p.hostname}  {p.os}  "
               f"({len(p.installed)} packages, {len(p.upgradable)} pending)")  # fmt: skip
    if len(fleet.agents) > limit:
        yield f"  … and {len(fleet.agents) - limit} more"
    yield f"CA: {fleet.root_path}"
