"""A simulated agent enrolling itself with the manager, as the real agent does (agent-api §7.1):
``POST {base}/api/v1/enroll`` (202 + polling token), ``GET {base}/api/v1/enroll/status/{token}``
until ``approved`` / ``denied`` / ``notfound``, then the files written as the agent names them
(``ca.pem``, ``server.pem``, ``server.key.pem`` 0600, ``crl.pem``) and the agent served with them.

Like the real agent, enrolment does not verify the manager's certificate (it has no CA yet).
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import trio

from ca import agent_server_context

from .agent import SimAgent
from .catalog import HostProfile

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
    async with httpx2.AsyncClient(base_url=base_url, verify=False, trust_env=False) as client:
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
