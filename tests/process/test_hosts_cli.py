"""`patch-manager hosts …` and `discover` against a running server and simulated agents."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from simulator import Fleet, FleetSpec

from .conftest import REPO

pytestmark = pytest.mark.timeout(120)


async def cli(server: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    data = server.data_dir
    return await trio.run_process(
        [
            sys.executable,
            "-m",
            "patch_manager",
            *args,
            "--data-dir",
            str(data),
            "--conf-dir",
            str(data.parent / "conf"),
            "--log-format",
            "json",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=str(REPO),
    )


def text(result: Any) -> str:
    return str(result.stdout.decode())


async def test_hosts_commands_reach_the_running_server(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(100):
        server = await start_server()
        await server.wait_ready()
        fleet = Fleet(
            server.data_dir / "ca",
            tmp_dir / "sim",
            FleetSpec(count=3, base_address="127.215.0.1", time_scale=0.01),
        )
        await nursery.start(fleet.run)
        agent = fleet.agents[0]

        result = await cli(
            server, "hosts", "add", agent.address, "--group", "web", "--display-name", "first"
        )
        assert result.returncode == 0, result.stderr
        assert f"{agent.address} ({agent.address}:12443)" in text(result)
        # The server picks the new host up, polls it and records the transition.
        seen = await server.wait_log("health pending -> healthy")
        await server.wait_log("recorded 1 health transition(s)", seen)

        result = await cli(server, "hosts", "add", agent.address)
        assert result.returncode == 1
        assert "already registered" in result.stderr.decode()
        result = await cli(server, "hosts", "add", "not a host")
        assert result.returncode == 1
        assert "name:" in result.stderr.decode()

        listing = json.loads(text(await cli(server, "hosts", "list", "--json")))["hosts"]
        assert [(h["name"], h["health"], h["groups"]) for h in listing] == [
            (agent.address, "healthy", ["web"])
        ]
        assert listing[0]["pending_patches"] == len(agent.profile.upgradable)

        served = agent.requests_served
        result = await cli(server, "hosts", "refresh", agent.address)
        assert result.returncode == 0, result.stderr
        await agent.wait_requests(served + 2)  # the server polled again at once

        result = await cli(server, "discover", "127.215.0.0/24")
        assert result.returncode == 0, result.stderr
        assert "3 agent(s) in 127.215.0.0/24" in text(result)
        for a in fleet.agents:
            assert a.address in text(result) and a.profile.hostname in text(result)

        result = await cli(server, "hosts", "remove", agent.address)
        assert result.returncode == 0, result.stderr
        await server.wait_log("host removed: stopping its actor")

        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0


async def test_hosts_add_refuses_loopback_names_and_odd_spellings_in_one_line(
    start_server: Any,
) -> None:
    with trio.fail_after(100):
        server = await start_server("[agents]\n")  # the default policy: no loopback agents
        await server.wait_ready()
        result = await cli(server, "hosts", "add", "localhost")
        assert result.returncode == 1
        assert result.stderr.decode().strip() == (
            "patch-manager: name: localhost resolves to 127.0.0.1: 127.0.0.1 is a loopback"
            " address (permit it with agents.allow_addresses)"
        )
        for name in ("0x7f000001", "169.254.169.254", "::1"):
            result = await cli(server, "hosts", "add", name)
            assert result.returncode == 1
            assert len(result.stderr.decode().strip().splitlines()) == 1
        result = await cli(server, "hosts", "add", "10.20.30.40", "--port", "22")
        assert result.returncode == 1
        assert "port: 22 is not the agent port 12443" in result.stderr.decode()
        listing = json.loads(text(await cli(server, "hosts", "list", "--json")))
        assert listing == {"hosts": [], "total": 0, "limit": 0, "offset": 0}
        result = await cli(server, "discover", "169.254.169.0/24")
        assert result.returncode == 1
        assert result.stderr.decode().strip() == (
            "patch-manager: every address of 169.254.169.0/24 is refused: 169.254.169.0 is a"
            " link-local address (permit it with agents.allow_addresses)"
        )
        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0
