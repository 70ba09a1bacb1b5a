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
                  "os_details": os_details or {}, "hostname": fqdn.split(".")[0]},
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


def enrolled_agent(
    files: EnrolledFiles, address: str, port: int, profile: HostProfile, *, time_scale: float
) -> SimAgent:
    """A simulated agent serving mTLS with the files it received."""
    ctx: ssl.SSLContext = agent_server_context(files.ca, files.server, files.key, files.crl)
    return SimAgent(address, port, profile, lambda: (ctx, ctx), time_scale=time_scale)
