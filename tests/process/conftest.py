"""Runs `patch-manager serve` as a real subprocess and follows its JSON log lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

REPO = Path(__file__).resolve().parents[2]
# The simulated agents live on loopback, which the address policy refuses by default.
LOOPBACK_AGENTS = '[agents]\nallow_addresses = ["127.0.0.0/8"]\n'


class ServerProcess:
    def __init__(self, process: trio.Process, data_dir: Path) -> None:
        self.process = process
        self.data_dir = data_dir
        self.url = ""
        self.admin_password = ""  # printed on the first start only
        self.totp_secret = ""  # the admin's authenticator app (tests.process.sessions)
        self.logs: list[dict[str, Any]] = []
        self._log_event = trio.Event()
        self._ready = trio.Event()
        self._password_shown = trio.Event()
        self._totp_shown = trio.Event()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for line in _lines(self.process.stdout):
            if "log in as admin with password " in line:
                self.admin_password = line.rsplit(" ", 1)[1].strip()
                self._password_shown.set()
            if "authenticator secret (TOTP) " in line:  # the demo's admin
                self.totp_secret = line.rsplit(" ", 1)[1].strip()
                self._totp_shown.set()
            if "is running at " in line:
                self.url = line.split("is running at ", 1)[1].strip()
                self._ready.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in _lines(self.process.stderr):
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"message": line, "level": "raw"})
            self._log_event.set()
            self._log_event = trio.Event()

    async def wait_ready(self) -> str:
        await self._ready.wait()
        return self.url

    async def wait_admin_password(self) -> str:
        """The bootstrap password the first start prints (after the URL)."""
        await self._password_shown.wait()
        return self.admin_password

    async def wait_totp_secret(self) -> str:
        """The admin's TOTP secret a demo prints (after the password)."""
        await self._totp_shown.wait()
        return self.totp_secret

    async def wait_log(self, fragment: str, start: int = 0) -> int:
        """Wait for a log line containing ``fragment``; returns its index."""
        while True:
            for index in range(start, len(self.logs)):
                if fragment in str(self.logs[index].get("message", "")):
                    return index
            await self._log_event.wait()

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca" / "root.crt"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postgres" / "data" / "postmaster.pid").read_text().split()[0])


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.fixture
async def start_server(nursery: trio.Nursery, tmp_dir: Path) -> AsyncIterator[Any]:
    started: list[ServerProcess] = []

    async def start(conf: str = "", *extra: str) -> ServerProcess:
        """``conf`` is the server's patch-manager.toml; unless it has an ``[agents]`` table, the
        simulated agents' loopback addresses are permitted (``agents.allow_addresses``)."""
        conf_dir = tmp_dir / "conf"
        conf_dir.mkdir(exist_ok=True)
        if "[agents]" not in conf:
            conf = f"{LOOPBACK_AGENTS}{conf}"
        (conf_dir / "patch-manager.toml").write_text(conf)
        env = {**os.environ, "PATCH_MANAGER_PG_FAST": "1", "PYTHONUNBUFFERED": "1"}
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "patch_manager",
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--conf-dir",
                str(conf_dir),
                "--data-dir",
                str(tmp_dir / "data"),
                "--log-format",
                "json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO),
            env=env,
        )
        server = ServerProcess(process, tmp_dir / "data")
        nursery.start_soon(server._read_stdout)
        nursery.start_soon(server._read_stderr)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.returncode is None:
            server.process.send_signal(signal.SIGKILL)
            await server.process.wait()
    # A server killed without a word leaves its embedded PostgreSQL running (orphaned): stop it
    # (fast shutdown) so a test run leaves no servers behind.
    try:
        postmaster = int(
            (tmp_dir / "data" / "postgres" / "data" / "postmaster.pid").read_text().split()[0]
        )
    except (OSError, ValueError, IndexError):
        return  # never started, or shut down cleanly (the file is gone)
    with contextlib.suppress(OSError):  # gone meanwhile, or the number reused by another user
        if process_alive(postmaster):
            os.kill(postmaster, signal.SIGINT)
