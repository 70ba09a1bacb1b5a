"""Command-line comfort (issue 16 point 10), as real subprocesses: commands without --data-dir
use the running demo's data directory and say so (no empty database beside it); `hosts list`
sorts naturally and gives the API's host items; the bootstrap password of a first start that
failed is shown at the next start; the banner comes after the start-up lines, framed; output
into a closed pipe ends quietly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from storage import HostEntry

from ..conftest import fleet_addresses
from .conftest import REPO, _lines

pytestmark = pytest.mark.timeout(150)

RULE = "=" * 78


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "patch_manager", *args]


def environment(data_home: Path) -> dict[str, str]:
    return {**os.environ, "PATCH_MANAGER_DATA_DIR": str(data_home),
            "PATCH_MANAGER_PG_FAST": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


async def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        args, capture_stdout=True, capture_stderr=True, check=False, cwd=str(REPO), env=env
    )


class Demo:
    """``patch-manager demo`` with stdout and stderr in one stream, as a terminal shows them."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.banner_end = trio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        opened = False
        async for line in _lines(self.process.stdout):
            self.lines.append(line)
            if line == RULE:
                if opened:
                    self.banner_end.set()
                opened = True


async def test_without_data_dir_commands_use_the_running_demos_data_directory(
    nursery: trio.Nursery, tmp_dir: Path
) -> None:
    home = tmp_dir / "home"
    conf = tmp_dir / "conf"
    conf.mkdir()
    env = environment(home)
    count = 11  # .2 must come before .10 and .11
    base = fleet_addresses(count)
    with trio.fail_after(120):
        process = await trio.lowlevel.open_process(
            command("demo", "--count", str(count), "--bind", "127.0.0.1:0", "--base-address",
                    base, "--conf-dir", str(conf), "--log-format", "text"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO), env=env,
        )  # fmt: skip
        demo = Demo(process)
        nursery.start_soon(demo.read)
        try:
            await demo.banner_end.wait()
            # the banner: framed, after every host's first poll, naming the data directory
            opening = demo.lines.index(RULE)
            before = demo.lines[:opening]
            assert sum("health pending -> healthy" in line for line in before) == count
            banner = demo.lines[opening : demo.lines.index(RULE, opening + 1)]
            assert any(f"data:     {home / 'demo'}" in line for line in banner), banner
            assert any("log in as admin with password " in line for line in banner), banner

            listed = await run(command("hosts", "list", "--json", "--conf-dir", str(conf)), env)
            assert listed.returncode == 0, listed.stderr
            note = listed.stderr.decode().strip()
            assert note.startswith("patch-manager: using the data directory of the server running")
            assert str(home / "demo") in note and len(note.splitlines()) == 1
            hosts = json.loads(listed.stdout)["hosts"]  # the API's reply: hosts, total, ...
            prefix = base.rsplit(".", 1)[0]
            assert {h["name"] for h in hosts} == {f"{prefix}.{n}" for n in range(1, count + 1)}
            shown = [h["display_name"] or h["name"] for h in hosts]  # the API's order
            parts = [[int(p) if p.isdigit() else p for p in re.split(r"(\d+)", t)] for t in shown]
            assert parts == sorted(parts)
            # the API's host items: the same fields, groups a list
            assert set(hosts[0]) == set(HostEntry.__dataclass_fields__)
            assert isinstance(hosts[0]["groups"], list) and hosts[0]["groups"]

            table = await run(command("hosts", "list", "--conf-dir", str(conf)), env)
            rows = table.stdout.decode().splitlines()[1:-1]
            assert [r.split()[1] for r in rows] == shown  # the NAME column: the shown name
            assert not (home / "postgres").exists()  # no empty database beside the demo's
        finally:
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    assert not (home / "running-server.json").exists()


async def start_serve(tmp_dir: Path, bind: str) -> trio.Process:
    conf = tmp_dir / "conf"
    conf.mkdir(exist_ok=True)
    return await trio.lowlevel.open_process(
        command("serve", "--bind", bind, "--conf-dir", str(conf), "--data-dir",
                str(tmp_dir / "data"), "--log-format", "json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO),
        env=environment(tmp_dir / "home"),
    )  # fmt: skip


async def banner_of(process: Any) -> list[str]:
    """stdout up to the banner's closing rule (or the end)."""
    lines: list[str] = []
    assert process.stdout is not None
    async for line in _lines(process.stdout):
        lines.append(line)
        if line == RULE and lines.count(RULE) == 2:
            break
    return lines


async def test_the_password_of_a_first_start_that_failed_is_shown_at_the_next_start(
    tmp_dir: Path,
) -> None:
    with trio.fail_after(120), socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = await start_serve(tmp_dir, f"127.0.0.1:{port}")
        assert await first.wait() == 1  # the port is taken: after the account was created
        out = b""
        assert first.stdout is not None
        async for chunk in first.stdout:
            out += chunk
        assert b"password" not in out

        second = await start_serve(tmp_dir, "127.0.0.1:0")
        try:
            banner = await banner_of(second)
        finally:
            second.send_signal(signal.SIGTERM)
            await second.wait()
        shown = [line for line in banner if "log in as admin with password " in line]
        assert len(shown) == 1, banner

        third = await start_serve(tmp_dir, "127.0.0.1:0")
        try:
            banner = await banner_of(third)
        finally:
            third.send_signal(signal.SIGTERM)
            await third.wait()
        assert not any("password " in line for line in banner), banner


@pytest.mark.parametrize("args", [("ca", "list"), ("hosts", "list")])
async def test_output_into_a_closed_pipe_ends_quietly(tmp_dir: Path, args: tuple[str, ...]) -> None:
    data = tmp_dir / "data"
    (tmp_dir / "conf").mkdir()
    env = environment(tmp_dir / "home")
    flags = ("--conf-dir", str(tmp_dir / "conf"), "--data-dir", str(data))
    with trio.fail_after(120):
        created = await run(command("ca", "init", *flags), env)
        assert created.returncode == 0, created.stderr
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written (`| head` that ended)
        try:
            result = await trio.run_process(
                command(*args, *flags), stdout=write, capture_stderr=True, check=False,
                cwd=str(REPO), env=env,
            )  # fmt: skip
        finally:
            os.close(write)
    assert result.returncode in (0, 141)
    errors = result.stderr.decode()
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
