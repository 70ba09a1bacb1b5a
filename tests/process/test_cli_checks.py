"""The command line's own checks, run as a user runs them (a subprocess): every configuration
problem in one run, a bad ``--host``, agent addresses already taken."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ..conftest import fleet_addresses
from .conftest import REPO, ServerProcess
from .sessions import logged_in

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patch_manager", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def test_check_config_reports_every_problem_of_every_file_in_one_run(tmp_dir: Path) -> None:
    conf = tmp_dir / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(
        '[server]\nbind = "no port here"\n'
        "[polling]\nhealth_interval_s = 1\nno_such_key = 3\n"
        '[agents]\nallow_addresses = ["10.0.0.0/33"]\n'
        "[discovery]\nmin_prefix_len = 8\n"
    )
    (conf / "hosts.toml").write_text('[hosts."web01"]\npaused = "yes"\n')
    result = run_cli("check-config", "--conf-dir", str(conf))
    assert result.returncode == 2
    assert result.stdout == ""
    for expected in (
        "server.bind: must be HOST:PORT",
        "polling.health_interval_s: must be at least 10",
        "polling.no_such_key: unknown key",
        "agents.allow_addresses: '10.0.0.0/33' is not an IPv4 CIDR range",
        "discovery.min_prefix_len: must be at least 16 (got 8)",
        "hosts.web01.paused: must be true or false",
    ):
        assert expected in result.stderr, expected
    assert "6 configuration problem(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_refuses_a_bind_host_that_is_no_host(tmp_dir: Path) -> None:
    conf = tmp_dir / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text('[server]\nbind = "bad host!:8443"\n')
    result = run_cli("check-config", "--conf-dir", str(conf))
    assert result.returncode == 2
    assert "server.bind: 'bad host!' is neither an IP address nor a host name" in result.stderr


@pytest.mark.parametrize("host", ["bad host!", "", "-web01", "a" * 64 + ".example.com"])
def test_check_config_host_that_is_no_host_name_is_one_line_exit_2(
    tmp_dir: Path, host: str
) -> None:
    result = run_cli("check-config", "--conf-dir", str(tmp_dir), f"--host={host}")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("patch-manager: --host: ")


def test_check_config_group_that_is_no_group_name_is_one_line_exit_2(tmp_dir: Path) -> None:
    result = run_cli(
        "check-config", "--conf-dir", str(tmp_dir), "--host", "web01", "--group", "no spaces"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "patch-manager: --group: 'no spaces' is not a valid group name"


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_a_taken_agent_address_is_one_line_naming_it_and_base_address(
    tmp_dir: Path, command: str
) -> None:
    address = fleet_addresses(1)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past runs' TIME_WAIT
        taken.bind((address, 12443))
        taken.listen()
        extra = ["--bind", "127.0.0.1:0"] if command == "demo" else []
        result = run_cli(
            command,
            "--count",
            "2",
            "--base-address",
            address,
            "--data-dir",
            str(tmp_dir / "data"),
            "--conf-dir",
            str(tmp_dir / "conf"),
            *extra,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{address}:12443" in lines[0]
    assert "--base-address" in lines[0]
    assert "Traceback" not in result.stderr


async def test_the_demo_permits_loopback_agents_without_configuration_and_refuses_the_rest(
    nursery: trio.Nursery, tmp_dir: Path
) -> None:
    conf = tmp_dir / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text("")  # no [agents] allow_addresses at all
    data = tmp_dir / "data"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "patch_manager", "demo", "--count", "2", "--bind", "127.0.0.1:0",
         "--base-address", fleet_addresses(2), "--conf-dir", str(conf), "--data-dir", str(data),
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO),
        env={**os.environ, "PATCH_MANAGER_PG_FAST": "1"},
    )  # fmt: skip
    server = ServerProcess(process, data)
    nursery.start_soon(server._read_stdout)
    nursery.start_soon(server._read_stderr)
    try:
        with trio.fail_after(100):
            await server.wait_ready()
            client = await logged_in(server)
            try:
                dashboard = (await client.get("")).text
                csrf = re.search(r'name="csrf-token" content="([^"]+)"', dashboard)
                assert csrf is not None
                client.headers["x-csrf-token"] = csrf[1]
                response = await client.post("api/v1/hosts", json={"name": "127.0.0.1"})
                assert response.status_code == 201, response.text
                response = await client.post("api/v1/hosts", json={"name": "169.254.169.254"})
                assert response.status_code == 422, response.text
            finally:
                await client.aclose()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
