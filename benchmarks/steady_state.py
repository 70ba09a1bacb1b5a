"""A realistic fleet at default polling intervals, watched by browsers (R-11.1, R-11.5; issue 17).

    .venv/bin/python benchmarks/steady_state.py --count 10000 --minutes 15 --browsers 5

Everything runs as an operator runs it, in separate processes on this machine: the simulated
agents (`patch-manager simulate --profile realistic`) and the manager (`patch-manager serve`,
its embedded PostgreSQL, HTTPS with TLS 1.3 through Hypercorn). The benchmark is the operator:

1. logs in (the bootstrap admin: new password, authenticator enrolment) and registers every
   agent through the JSON API (16 requests at a time); each new host's actor polls it at once;
2. **ingest**: waits until every host's health and patch data are stored (every package and
   patch of every host), as seen through the live relay;
3. **start-up**: restarts the manager and times it until the web answers and until the relay
   shows every host with its stored state loaded (health and patch data times restored);
4. **steady state** for ``--minutes`` at the default intervals (health every 300 s, patches
   every 1800 s): ``--browsers`` relay sockets stay connected (the live dashboard), and as many
   page clients each load the dashboard and the first page of the host list every 2 s.

Printed: registration and ingest times; start-up times; during the steady state, polls made and
failed (the manager's /metrics), hosts not polled within their interval + jitter (from the
health data times the relay publishes), manager CPU per poll and PostgreSQL CPU, RSS per actor,
dashboard and host-list latency (p50/p95/max) and **agent event → browser** latency: for every
change a socket receives whose health or patch data time moved, receive time minus that time
(the moment the manager stored the agent's answer), p50/p95/max over every socket.

The browsers share the admin's session (each socket is its own relay subscriber; the relay's
cost is per socket). Loopback only; both processes are stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pyotp
import trio
import trio_websocket

REPO = Path(__file__).resolve().parents[1]
BASE = "127.160.0.1"
PASSWORD = "steady state benchmark passphrase"
HEALTH_INTERVAL_S = 300  # the defaults (settings/schema.py)
PATCH_INTERVAL_S = 1800
JITTER = 0.1


# -- processes --------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU of the process's descendants (PostgreSQL: the postmaster and its backends)."""
    total = 0.0
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_s(child) + tree_cpu_s(child)
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_simulator(root: Path, count: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "simulate", "--count", str(count),
         "--base-address", BASE, "--data-dir", str(root / "data"), "--log-level", "warning",
         "--profile", "realistic"],
        stdout=subprocess.PIPE, stderr=(root / "simulator.log").open("wb"), cwd=REPO,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(b"control socket"):
            return process
    raise SystemExit("the simulator did not start: see " + str(root / "simulator.log"))


def start_server(root: Path, port: int = 0) -> tuple[subprocess.Popen[str], str, str]:
    """``serve``; returns the process, its URL and the bootstrap password ("" after the first)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "serve", "--bind", f"127.0.0.1:{port}",
         "--data-dir", str(root / "data"), "--conf-dir", str(root / "conf"),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=(root / "server.log").open("a"), text=True, cwd=REPO,
    )  # fmt: skip
    url = password = ""
    assert process.stdout is not None
    for line in process.stdout:
        if "is running at " in line:
            url = line.split("is running at ", 1)[1].strip()
            if port:
                break
        if "with password " in line:
            password = line.split("with password ", 1)[1].strip()
            break
    if not url:
        process.kill()
        raise SystemExit("the server did not start: see " + str(root / "server.log"))
    # Keep draining its output so a full pipe never blocks it.
    threading.Thread(target=drain, args=(process,), daemon=True).start()
    return process, url, password


def drain(process: subprocess.Popen[str]) -> None:
    for _ in process.stdout or ():
        pass


# -- the operator -----------------------------------------------------------------------------


class Operator:
    def __init__(self, url: str, cafile: Path) -> None:
        self.url = url.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(cafile))
        self.totp = ""
        self.used_steps: set[int] = set()
        self.cookie = ""
        self.csrf = ""

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.url, verify=self.context, timeout=60,
            cookies={"pm_session": self.cookie} if self.cookie else None,
        )  # fmt: skip

    async def code(self) -> str:
        while True:
            step = int(time.time() // 30)
            if step not in self.used_steps:
                self.used_steps.add(step)
                return pyotp.TOTP(self.totp).at(step * 30)
            await trio.sleep(30 - time.time() % 30 + 0.1)

    async def log_in(self, password: str) -> None:
        """The bootstrap admin's first login (new password, authenticator enrolment), or a later
        one (password and a code)."""
        self.cookie = ""
        async with self.client() as c:
            page = await c.get("/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token is not None, page.text
            sent = await c.post(
                "/login",
                data={"username": "admin", "password": password, "login_token": token[1]},
            )
            assert sent.status_code == 303, sent.text
            if sent.headers.get("location") == "/login/mfa":
                sent = await c.post("/login/mfa", data={"code": await self.code()})
                assert sent.status_code == 303, sent.text
            if sent.headers.get("location") == "/password":
                page = await c.get("/password")
                changed = await c.post(
                    "/password",
                    data={"csrf_token": csrf_of(page.text), "current_password": password,
                          "new_password": PASSWORD},
                )  # fmt: skip
                assert changed.status_code == 303, changed.text
            if (await c.get("/")).headers.get("location") == "/mfa/setup":
                page = await c.get("/mfa/setup")
                secret = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
                assert secret is not None, page.text
                self.totp = secret[1]
                done = await c.post(
                    "/mfa/totp", data={"csrf_token": csrf_of(page.text), "code": await self.code()}
                )
                assert done.status_code == 200, done.text
            self.cookie = c.cookies["pm_session"]
            self.csrf = csrf_of((await c.get("/")).text)

    async def register(self, addresses: list[str], parallel: int = 16) -> None:
        failures: list[str] = []
        async with self.client() as c:
            c.headers["x-csrf-token"] = self.csrf
            limit = trio.CapacityLimiter(parallel)

            async def add(address: str) -> None:
                async with limit:
                    r = await c.post("/api/v1/hosts", json={"name": address})
                    if r.status_code != 201:
                        failures.append(f"{address}: {r.status_code} {r.text[:120]}")

            async with trio.open_nursery() as nursery:
                for address in addresses:
                    nursery.start_soon(add, address)
        if failures:
            raise SystemExit(f"{len(failures)} registrations failed, first: {failures[0]}")

    async def metrics(self) -> dict[str, float]:
        async with self.client() as c:
            text = (await c.get("/metrics")).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("patchmgr_polls_total"):
                outcome = re.search(r'outcome="(\w+)"', line)
                if outcome:
                    out[outcome[1]] = float(line.rsplit(" ", 1)[1])
        return out


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page
    )
    assert found is not None, page[:500]
    return found[1]


def when(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


class Browser:
    """One relay socket: the latest state of every host, and the latency of fresh data."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.hosts: dict[int, dict[str, Any]] = {}
        self.latencies: list[float] = []
        self.health_times: dict[int, list[float]] = {}
        self.snapshot_done = trio.Event()
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = self.op.url.removeprefix("https://").split(":")
        async with trio_websocket.open_websocket(
            host, int(port), "/api/v1/live", use_ssl=self.op.context,
            extra_headers=[(b"cookie", f"pm_session={self.op.cookie}".encode()),
                           (b"origin", self.op.url.encode())],
            max_message_size=256 * 1024 * 1024,
        ) as ws:  # fmt: skip
            task_status.started()
            while True:
                message = json.loads(await ws.get_message())
                received = time.time()
                kind = message.get("type")
                if kind in ("snapshot", "snapshot_page"):
                    if kind == "snapshot":
                        self.hosts.clear()
                    for h in message["hosts"]:
                        self._health(h, self.hosts.get(h["host_id"], {}))  # resyncs too
                        self.hosts[h["host_id"]] = h
                    if message["page"] == message["pages"]:
                        self.snapshot_done.set()
                elif kind == "change":
                    h = message["host"]
                    old = self.hosts.get(h["host_id"], {})
                    fresh = [
                        t for key in ("health_as_of", "patches_as_of")
                        if h.get(key) != old.get(key) and (t := when(h.get(key))) is not None
                    ]  # fmt: skip
                    if fresh and self.snapshot_done.is_set():
                        self.latencies.append(received - max(fresh))
                    self._health(h, old)
                    self.hosts[h["host_id"]] = h
                    self.changed.set()
                    self.changed = trio.Event()

    def _health(self, h: dict[str, Any], old: dict[str, Any]) -> None:
        if old and h.get("health_as_of") != old.get("health_as_of"):
            t = when(h.get("health_as_of"))
            if t is not None:
                self.health_times.setdefault(h["host_id"], []).append(t)

    def count(self, predicate: Any) -> int:
        return sum(1 for h in self.hosts.values() if predicate(h))


async def watch_until(browser: Browser, predicate: Any, count: int, label: str, t0: float) -> float:
    last_print = 0.0
    while browser.count(predicate) < count:
        if time.perf_counter() - last_print > 15:
            last_print = time.perf_counter()
            print(f"  {label}: {browser.count(predicate)} of {count} "
                  f"after {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        with trio.move_on_after(1):
            await browser.changed.wait()
    return time.perf_counter() - t0


def stored(h: dict[str, Any]) -> bool:
    return bool(h.get("health_as_of")) and bool(h.get("patches_as_of"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float], unit: float = 1000.0, suffix: str = "ms") -> str:
    if not values:
        return "no samples"
    return (f"p50 {pct(values, 0.5) * unit:.0f} {suffix}, p95 {pct(values, 0.95) * unit:.0f} "
            f"{suffix}, max {max(values) * unit:.0f} {suffix} ({len(values)} samples)")  # fmt: skip


async def page_client(op: Operator, until: float, dash: list[float], hosts: list[float]) -> None:
    async with op.client() as c:
        while time.perf_counter() < until:
            for path, out in (("/", dash), ("/hosts", hosts)):
                t = time.perf_counter()
                r = await c.get(path)
                out.append(time.perf_counter() - t)
                assert r.status_code == 200, (path, r.status_code)
            await trio.sleep(2)


async def run(args: argparse.Namespace, root: Path) -> None:
    from simulator import FleetSpec

    (root / "conf").mkdir()
    (root / "conf" / "patch-manager.toml").write_text(
        '[agents]\nallow_addresses = ["127.0.0.0/8"]\n'
    )
    server, url, bootstrap = start_server(root)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    simulator = start_simulator(root, args.count)
    op = Operator(url, root / "data" / "ca" / "root.crt")
    try:
        await op.log_in(bootstrap)
        rss_empty = rss_mb(server.pid)
        addresses = FleetSpec(count=args.count, base_address=BASE).address_list()
        browser = Browser(op)
        async with trio.open_nursery() as nursery:
            await nursery.start(browser.run)
            await browser.snapshot_done.wait()
            t0 = time.perf_counter()
            cpu0, pg0 = proc_cpu_s(server.pid), tree_cpu_s(server.pid)
            await op.register(addresses)
            registered = time.perf_counter() - t0
            print(f"registered {args.count} hosts through the API in {registered:.1f} s",
                  flush=True)  # fmt: skip
            ingest = await watch_until(browser, stored, args.count, "hosts stored", t0)
            cpu1, pg1 = proc_cpu_s(server.pid), tree_cpu_s(server.pid)
            print(f"ingest: every host's health, packages and patches stored {ingest:.1f} s "
                  f"after the first registration; manager CPU {cpu1 - cpu0:.0f} s, "
                  f"PostgreSQL CPU {pg1 - pg0:.0f} s; manager RSS {rss_mb(server.pid):.0f} MB",
                  flush=True)  # fmt: skip
            nursery.cancel_scope.cancel()

        # Start-up: a restart of the whole manager with every host stored.
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        t0 = time.perf_counter()
        server, url, _ = start_server(root, port)
        web_up = time.perf_counter() - t0  # the session outlives the restart: no new login
        browser = Browser(op)
        async with trio.open_nursery() as nursery:
            await nursery.start(browser.run)
            await browser.snapshot_done.wait()
            loaded = await watch_until(browser, stored, args.count, "states loaded", t0)
            print(f"start-up of {args.count} hosts: web answering {web_up:.1f} s, every host "
                  f"shown with its stored state {loaded:.1f} s", flush=True)  # fmt: skip
            nursery.cancel_scope.cancel()

        # Steady state.
        print(f"steady state: {args.minutes} min, {args.browsers} browsers", flush=True)
        browsers = [Browser(op) for _ in range(args.browsers)]
        dash: list[float] = []
        host_list: list[float] = []
        polls0 = await op.metrics()
        cpu0, pg0 = proc_cpu_s(server.pid), tree_cpu_s(server.pid)
        start_wall = time.time()
        async with trio.open_nursery() as nursery:
            for b in browsers:
                await nursery.start(b.run)
            for b in browsers:
                await b.snapshot_done.wait()
            start_health = {i: when(h.get("health_as_of")) for i, h in browsers[0].hosts.items()}
            until = time.perf_counter() + args.minutes * 60
            async with trio.open_nursery() as pages:
                for _ in range(args.browsers):
                    pages.start_soon(page_client, op, until, dash, host_list)
            nursery.cancel_scope.cancel()
        end_wall = time.time()
        cpu1, pg1 = proc_cpu_s(server.pid), tree_cpu_s(server.pid)
        polls1 = await op.metrics()
        ok = polls1.get("ok", 0) - polls0.get("ok", 0)
        failed = polls1.get("failed", 0) - polls0.get("failed", 0)
        allowed = HEALTH_INTERVAL_S * (1 + JITTER) + 5
        # Late within the window: a gap over the interval + jitter between two polls seen, or
        # from the window's start (or the host's last poll, if later) to its first poll / the
        # end. Hosts already overdue when the window began (their last poll was during the
        # ingest or before the restart) are counted apart.
        late = overdue = 0
        watcher = browsers[0]
        for host_id in watcher.hosts:
            before = start_health.get(host_id)
            if before is None or before < start_wall - allowed:
                overdue += 1
                before = start_wall  # judged from the window's start
            times = [before, *watcher.health_times.get(host_id, []), end_wall]
            if any(b - a > allowed for a, b in itertools.pairwise(times)):
                late += 1
        allowed_patch = PATCH_INTERVAL_S * (1 + JITTER) + 5
        patch_late = sum(
            1 for h in watcher.hosts.values()
            if end_wall - (when(h.get("patches_as_of")) or 0) > allowed_patch
        )  # fmt: skip
        latencies = [x for b in browsers for x in b.latencies]
        rss = rss_mb(server.pid)
        print(f"polls: {ok:.0f} ok, {failed:.0f} failed; manager CPU {cpu1 - cpu0:.0f} s "
              f"({(cpu1 - cpu0) / max(ok, 1) * 1000:.1f} ms per poll), PostgreSQL CPU "
              f"{pg1 - pg0:.0f} s", flush=True)  # fmt: skip
        print(f"hosts overdue when the window began: {overdue}; hosts with a health gap over "
              f"{allowed:.0f} s (interval + jitter) within the window: {late} of "
              f"{len(watcher.hosts)}; hosts whose patch data is older than "
              f"{allowed_patch:.0f} s at the end: {patch_late}")  # fmt: skip
        print(f"manager RSS {rss:.0f} MB ({(rss - rss_empty) * 1024 / args.count:.0f} KB per "
              f"host over the empty server's {rss_empty:.0f} MB)")  # fmt: skip
        print(f"dashboard: {summary(dash)}")
        print(f"host list (first page): {summary(host_list)}")
        print(f"agent event -> browser: {summary(latencies)}")
    finally:
        for process in (simulator, server):
            process.send_signal(signal.SIGINT if process is simulator else signal.SIGTERM)
        for process in (simulator, server):
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--browsers", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-steady-"))
    root.chmod(0o755)
    try:
        trio.run(run, args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"data kept in {root}")


if __name__ == "__main__":
    main()
