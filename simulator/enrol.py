"""A simulated agent enrolling itself with the manager, as the real agent does (agent-api §7.1):
``POST {base}/api/v1/enroll`` (202 + polling token), ``GET {base}/api/v1/enroll/status/{token}``
until ``approved`` / ``denied`` / ``notfound``, then the files written as the agent names them
(``ca.pem``, ``server.pem``, ``server.key.pem`` 0600, ``crl.pem``) and the agent served with them.

Like the real agent, enrolment does not verify the manager's certificate (it has no CA yet).

``python -m simulator.enrol URL --address 127.0.0.50`` does it against a running manager from
the shell (``enrol_and_serve``): the agent enrols, waits for approval, then serves.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import ssl
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import trio

from ca import agent_server_context

from .agent import SimAgent
from .catalog import HostProfile, generate_profile

log = logging.getLogger(__name__)


class EnrolmentFailed(Exception):
    """The manager refused (409, denied, notfound) or never answered approved."""


@dataclass(frozen=True)
class EnrolledFiles:
    directory: Path
    ca: Path
    server: Path
    key: Path
    crl: Path | None


def write_bundle(directory: Path, bundle: dict[str, Any]) -> EnrolledFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "ca.pem"
    ca.write_text(bundle["ca_crt"])
    server = directory / "server.pem"
    server.write_text(bundle["server_crt"])
    key = directory / "server.key.pem"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bundle["server_key"])
    crl = None
    if bundle.get("crl_pem"):
        crl = directory / "crl.pem"
        crl.write_text(bundle["crl_pem"])
    return EnrolledFiles(directory, ca, server, key, crl)


# The shape the real agent sends (src/enroll/identity.rs get_os_details): distro is the
# os-release NAME, version its VERSION_ID.
AGENT_OS_DETAILS: dict[str, Any] = {
    "distro": "Ubuntu", "version": "24.04", "id_like": "debian", "codename": "noble",
    "kernel": "6.8.0-45-generic",
}  # fmt: skip


async def enrol(
    base_url: str,
    directory: Path,
    *,
    machine_id: str,
    fqdn: str,
    ip_address: str,
    os_details: dict[str, Any] | None = None,
    poll_interval_s: float = 60.0,
    max_attempts: int = 1440,
    polled: trio.Event | None = None,
) -> EnrolledFiles:
    """Enrol and wait for the decision; ``polled`` is set after the first status answer."""
    # Sent from the agent's own address, as the real agent's requests are (the manager's
    # auto-approval rule requires source address = ip_address).
    transport = httpx2.AsyncHTTPTransport(verify=False, local_address=ip_address)
    async with httpx2.AsyncClient(
        base_url=base_url, transport=transport, trust_env=False
    ) as client:
        response = await client.post(
            "/api/v1/enroll",
            json={"machine_id": machine_id, "fqdn": fqdn, "ip_address": ip_address,
                  "os_details": os_details or AGENT_OS_DETAILS, "hostname": fqdn.split(".")[0]},
        )  # fmt: skip
        if response.status_code != 202:
            raise EnrolmentFailed(f"enrolment refused: {response.status_code} {response.text}")
        token = response.json()["polling_token"]
        for _ in range(max_attempts):
            answer = await client.get(f"/api/v1/enroll/status/{token}")
            if polled is not None:
                polled.set()
            body = answer.json() if answer.status_code == 200 else {}
            state = body.get("status")
            if state == "approved":
                return await trio.to_thread.run_sync(write_bundle, directory, body)
            if state in ("denied", "notfound"):
                raise EnrolmentFailed(f"enrolment {state}")
            await trio.sleep(poll_interval_s)
    raise EnrolmentFailed("no decision before the attempt limit")


async def refresh_crl(base_url: str, files: EnrolledFiles) -> Path:
    """Fetch the CRL from the manager as the agent does (agent-api §7.3): HTTPS verified
    against the CA the agent pinned at enrolment; written next to its other files."""
    verify = ssl.create_default_context(cafile=str(files.ca))
    async with httpx2.AsyncClient(base_url=base_url, verify=verify, trust_env=False) as client:
        response = await client.get("/api/v1/pki/crl.pem")
        response.raise_for_status()
    path = files.directory / "crl.pem"
    await trio.Path(path).write_bytes(response.content)
    return path


class EnrolledContexts:
    """The enrolled agent's server context, rebuilt from its files on ``reload()`` (the real
    agent re-reads its CRL hourly and after each refresh)."""

    def __init__(self, files: EnrolledFiles) -> None:
        self.files = files
        self.reload()

    def reload(self) -> None:
        crl = self.files.directory / "crl.pem"
        self.ctx: ssl.SSLContext = agent_server_context(
            self.files.ca, self.files.server, self.files.key, crl if crl.exists() else None
        )

    def __call__(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return self.ctx, self.ctx


def enrolled_agent(
    files: EnrolledFiles, address: str, port: int, profile: HostProfile, *, time_scale: float
) -> tuple[SimAgent, EnrolledContexts]:
    """A simulated agent serving mTLS with the files it received, and its contexts."""
    contexts = EnrolledContexts(files)
    return SimAgent(address, port, profile, contexts, time_scale=time_scale), contexts


async def enrol_and_serve(
    base_url: str,
    directory: Path,
    *,
    address: str,
    port: int = 12443,
    machine_id: str | None = None,
    fqdn: str | None = None,
    time_scale: float = 1.0,
    poll_interval_s: float = 5.0,
    task_status: trio.TaskStatus[SimAgent] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One simulated agent on loopback ``address``: enrol against the manager at ``base_url``,
    wait for an admin's (or auto-) approval, then serve with the files received until
    cancelled. ``task_status`` gets the serving agent."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4 or not ip.is_loopback:
        raise EnrolmentFailed(f"{address} is not a 127.0.0.0/8 address (simulated agents are)")
    name = fqdn or f"sim-{address.replace('.', '-')}.example.com"
    machine = machine_id or f"sim-{address.replace('.', '-')}"
    log.info("enrolling %s (%s, %s) with %s", machine, name, address, base_url)
    files = await enrol(base_url, directory, machine_id=machine, fqdn=name, ip_address=address,
                        poll_interval_s=poll_interval_s)  # fmt: skip
    profile = generate_profile(int(ip) & 0xFFFF, 1)
    agent, _ = enrolled_agent(files, address, port, profile, time_scale=time_scale)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        log.info("enrolled; serving on %s:%d with %s", address, port, files.directory)
        task_status.started(agent)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator.enrol URL --address 127.0.0.50``: a simulated agent enrols with a
    running manager, waits for approval and then serves (Ctrl-C stops it)."""
    parser = argparse.ArgumentParser(prog="python -m simulator.enrol", description=main.__doc__)
    parser.add_argument("url", help="the manager's web address, e.g. https://127.0.0.1:8443")
    parser.add_argument("--address", required=True, help="the agent's 127.0.0.0/8 address")
    parser.add_argument("--port", type=int, default=12443, help="agent port (12443)")
    parser.add_argument("--dir", type=Path, help="where its files go (default: ./enrolled-ADDR)")
    parser.add_argument("--machine-id", help="default sim-ADDR")
    parser.add_argument("--fqdn", help="default sim-ADDR.example.com")
    parser.add_argument("--time-scale", type=float, default=1.0, help="1.0 = real time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    directory = args.dir or Path(f"enrolled-{args.address}")
    try:
        trio.run(partial(enrol_and_serve, args.url, directory, address=args.address,
                         port=args.port, machine_id=args.machine_id, fqdn=args.fqdn,
                         time_scale=args.time_scale))  # fmt: skip
    except (EnrolmentFailed, httpx2.HTTPError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
