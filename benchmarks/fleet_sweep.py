"""A full health + patch sweep of N simulated agents by the real actor system (R-11.2, R-11.3).

    .venv/bin/python benchmarks/fleet_sweep.py --count 2500

The simulator runs in its own process (`patch-manager simulate`), so the CPU figures are the
manager's alone. The manager side runs the real scheduler, host actors, agent clients and
PostgreSQL writes (embedded PostgreSQL in a temporary directory). Then a bare httpx loop makes
the same four requests per host (health, system/info, patches, packages) for comparison, its
new connections limited exactly like the manager's (the same number of handshakes at once).

Failed polls are counted and reported (a sweep that cannot complete stops at its deadline and
says how many hosts were never polled) instead of crashing the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import trio
import trio.lowlevel

from actors import ConnectionRamp, HealthState
from actors.agent_client import KEEPALIVE_EXPIRY
from actors.scheduler import INGEST_SLOTS
from ca import CertificateAuthority, agent_client_context
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from storage import Database, EmbeddedPostgres, insert_host, migrate

# PM_BENCH_BASE moves the simulated fleet (two runs at once need different ranges).
BASE = os.environ.get("PM_BENCH_BASE", "127.201.0.1")


def system_cpu_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_simulator(root: Path, count: int, profile: str = "realistic") -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "simulate", "--count", str(count),
         "--base-address", BASE, "--time-scale", "0.01", "--data-dir", str(root),
         "--log-level", "warning", "--profile", profile],
        stdout=subprocess.PIPE, stderr=(root / "simulator.log").open("wb"),
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(b"control socket"):
            return process
    raise RuntimeError("the simulator did not start")


async def wait_until(fleet: Any, predicate: Any, period: float = 0.05) -> None:
    """Wait until ``predicate(snapshots)`` holds, checking it at most every ``period`` s.
    (``FleetState.wait_until`` checks it at every publish: an O(hosts) predicate then costs
    O(hosts^2) of the manager's CPU in a sweep, which this benchmark would count as the
    manager's; the sweep times it measures are seconds, so 50 ms of resolution is enough.)"""
    while not predicate(fleet.snapshots()):  # noqa: ASYNC110 (polling on purpose, see above)
        await trio.sleep(period)


def polled_once(snaps: list[Any], count: int) -> bool:
    return len(snaps) == count and all(s.last_success is not None for s in snaps)


def at_rest_rss_mb() -> float:
    """RSS after a full collection and handing freed heap pages back (glibc ``malloc_trim``):
    the memory still held, not the garbage of the sweep's parsed responses."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def open_agent_connections(system: Any) -> tuple[int, int]:
    """Pools and connections the shared agent transport still holds (0, 0 at rest)."""
    for running in system.scheduler.hosts.values():
        agent = getattr(running.actor, "_agent", None)
        transport = getattr(agent, "_transport", None)
        if transport is not None:
            pools = list(transport._pools.values())
            return len(pools), sum(len(p._pool.connections) for p in pools)
    return 0, 0


def task_count() -> int:
    """Trio tasks alive in this run (every nursery's children, from the root task down)."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


def heap_figures() -> dict[str, float]:
    """Bytes by holder, to split the RSS at rest: glibc malloc in use (``mallinfo2``: every C
    allocation, OpenSSL's included, and Python's large objects) and free but kept; CPython's
    small-object allocator (pymalloc): arenas held and the bytes of live objects in them."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out["malloc_in_use"] = float(info.uordblks + info.hblkhd)
        out["malloc_free"] = float(info.fordblks)
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture:
            key, _, value = line.partition("=")
            key = key.strip("# \n")
            if key == "arenas allocated current":
                out["pymalloc_arenas"] = float(value.strip().replace(",", ""))
            elif key == "bytes in allocated blocks":
                out["pymalloc_live"] = float(value.strip().replace(",", ""))
    return out


async def manager_sweep(
    root: Path,
    count: int,
    addresses: list[str],
    deadline: float,
    trace: bool = False,
    ingest_slots: int = 0,
) -> dict[str, Any]:
    conf = root / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(
        '[agents]\nallow_addresses = ["127.0.0.0/8"]\n'
        "[polling]\nhealth_interval_s = 86400\npatch_interval_s = 86400\n"
        "request_timeout_s = 60.0\nconnect_timeout_s = 60.0\n"
    )
    store = ConfigStore(conf)
    cluster = EmbeddedPostgres(root / "pg")
    async with trio.open_nursery() as nursery:
        dsn = await nursery.start(cluster.run)
        db = Database(dsn, size=8)
        await db.open()
        await db.run(migrate)

        def insert_all(conn: Any) -> None:
            with conn.transaction():
                for address in addresses:
                    insert_host(conn, name=address, address=address)

        await db.run(insert_all)
        ca = CertificateAuthority(root / "ca")
        system = build_actor_system(store, Storage(db, cluster, "bench"), ca)
        if ingest_slots:
            system.scheduler.ingest.total_tokens = ingest_slots
        await nursery.start(system.sink.run)
        if trace:
            tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
        before_trace = tracemalloc.take_snapshot() if trace else None
        rss_before, cpu_before, t0 = at_rest_rss_mb(), cpu_seconds(), time.perf_counter()
        system_before = system_cpu_seconds()
        heap_before, tasks_before = heap_figures(), task_count()
        await nursery.start(system.scheduler.run)

        def swept(snaps: list[Any]) -> bool:
            return len(snaps) == count and all(
                s.health is HealthState.HEALTHY and s.phase.value == "idle"
                and s.last_success is not None
                and r.actor is not None and r.actor.polls >= 2
                for s, r in ((s, system.scheduler.hosts[s.host_id]) for s in snaps)
            )  # fmt: skip

        polled_at = None
        with trio.move_on_after(deadline):
            await wait_until(system.fleet, lambda snaps: polled_once(snaps, count))
            polled_at = time.perf_counter() - t0
            await wait_until(system.fleet, swept)
        first = time.perf_counter() - t0
        failed_first = system.fleet.metrics.failed
        never_polled = sum(s.last_success is None for s in system.fleet.snapshots())
        if polled_at is None or never_polled:
            nursery.cancel_scope.cancel()
            return {
                "complete": False, "first_sweep_s": first, "failed_polls": failed_first,
                "never_polled": never_polled, "ramp": system.ramp,
                "health": Counter(s.health.value for s in system.fleet.snapshots()),
            }  # fmt: skip
        first_cpu = cpu_seconds() - cpu_before
        first_system = system_cpu_seconds() - system_before
        await system.sink.flush()
        rows_first = (system.sink.stats.state_rows + system.sink.stats.transition_rows
                      + system.sink.stats.patch_rows)  # fmt: skip
        # At rest: once the idle agent connections are closed (the transport closes those
        # unused for its keep-alive expiry, checking as often; an open one holds ~100 KB):
        # at least two checks, then until none is left (at most 60 s more).
        await trio.sleep(2 * KEEPALIVE_EXPIRY + 1)
        with trio.move_on_after(60):
            while open_agent_connections(system) != (0, 0):  # noqa: ASYNC110 (no event)
                await trio.sleep(1)
        at_rest = (at_rest_rss_mb() - rss_before) * 1024 / count
        heap_after = heap_figures()
        heap = {k: (heap_after[k] - heap_before.get(k, 0.0)) for k in heap_after}
        still_open = open_agent_connections(system)
        tasks = (task_count() - tasks_before) / count
        if trace and before_trace is not None:
            gc.collect()
            traced = (tracemalloc.get_traced_memory()[0] - traced_before) / 1024 / count
            print(f"traced Python memory per actor at rest: {traced:.0f} KB; top sites:")
            top = tracemalloc.take_snapshot().compare_to(before_trace, "lineno")[:15]
            for stat in top:
                print(f"  {stat.size_diff / 1024 / count:7.1f} KB/actor  {stat.traceback}")
            tracemalloc.stop()

        # Second sweep: the same data again (nothing new to store).
        polls = {h: r.actor.polls for h, r in system.scheduler.hosts.items() if r.actor}
        if mark := os.environ.get("PM_BENCH_MARK"):  # profiling the second sweep alone
            Path(mark).write_text(str(os.getpid()))
        t1, cpu1 = time.perf_counter(), cpu_seconds()
        system.handle.refresh()

        def resweep(snaps: list[Any]) -> bool:
            return all(
                (r.actor is not None and r.actor.polls >= polls.get(h, 0) + 2)
                for h, r in system.scheduler.hosts.items()
            ) and all(s.phase.value == "idle" for s in snaps)

        with trio.move_on_after(deadline):
            await wait_until(system.fleet, resweep)
        second = time.perf_counter() - t1
        second_cpu = cpu_seconds() - cpu1
        await system.sink.flush()
        rows_total = (system.sink.stats.state_rows + system.sink.stats.transition_rows
                      + system.sink.stats.patch_rows)  # fmt: skip
        nursery.cancel_scope.cancel()
    await db.close()
    return {
        "complete": True, "polled_once_s": polled_at,
        "first_sweep_s": first, "first_cpu_s": first_cpu, "rows_first": rows_first,
        "first_system_s": first_system,
        "second_sweep_s": second, "second_cpu_s": second_cpu,
        "rows_second": rows_total - rows_first, "kb_per_actor": at_rest,
        "heap": heap, "still_open": still_open, "tasks_per_actor": tasks,
        "failed_polls": system.fleet.metrics.failed, "failed_first": failed_first,
        "ramp": system.ramp,
    }  # fmt: skip


async def bare_sweep(root: Path, addresses: list[str], slots: int) -> tuple[float, float, int]:
    """The same four requests per host with plain httpx clients, new connections limited to
    ``slots`` handshakes at once like the manager's ramp. Returns time, CPU and errors."""
    ca = CertificateAuthority(root / "ca")
    ctx = agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path)
    limiter = trio.CapacityLimiter(slots)
    errors: Counter[str] = Counter()
    t0, cpu0 = time.perf_counter(), cpu_seconds()

    async def one(address: str) -> None:
        token = object()
        held = False

        async def trace(name: str, info: Any) -> None:
            nonlocal held
            if name == "connection.connect_tcp.started" and not held:
                await limiter.acquire_on_behalf_of(token)
                held = True
            elif name in DONE and held:
                limiter.release_on_behalf_of(token)
                held = False

        async with httpx2.AsyncClient(verify=ctx, base_url=f"https://{address}:12443",
                                      timeout=60) as client:  # fmt: skip
            for path in ("/health", "/api/v1/system/info", "/api/v1/patches", "/api/v1/packages"):
                try:
                    response = await client.get(path, extensions={"trace": trace})
                    response.raise_for_status()
                except httpx2.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                finally:
                    if held:
                        limiter.release_on_behalf_of(token)
                        held = False

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(one, address)
    if errors:
        print(f"bare httpx errors: {dict(errors)}")
    return time.perf_counter() - t0, cpu_seconds() - cpu0, sum(errors.values())


DONE = frozenset(
    {
        "connection.connect_tcp.failed",
        "connection.start_tls.complete",
        "connection.start_tls.failed",
    }
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="give up a sweep after this many seconds (and report)")  # fmt: skip
    parser.add_argument("--profile", choices=("small", "realistic"), default="realistic",
                        help="simulated package lists (default realistic)")  # fmt: skip
    parser.add_argument("--ingest-slots", type=int, default=0,
                        help="hosts fetching and storing patch data at once (default: the "
                             "scheduler's)")  # fmt: skip
    parser.add_argument("--trace-memory", action="store_true",
                        help="also trace Python allocations at rest (slower)")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-sweep-"))
    root.chmod(0o755)
    simulator = start_simulator(root, args.count, args.profile)
    try:
        from simulator import FleetSpec

        addresses = FleetSpec(count=args.count, base_address=BASE).address_list()
        result = trio.run(
            manager_sweep,
            root,
            args.count,
            addresses,
            args.deadline,
            args.trace_memory,
            args.ingest_slots,
        )
        ramp: ConnectionRamp = result["ramp"]
        n = args.count
        print(f"ingest slots: {args.ingest_slots or INGEST_SLOTS}")
        print(f"hosts: {n} (profile {args.profile}); connection ramp: {ramp.limit} "
              f"handshakes at once ({ramp.opened} "
              f"connections opened, {ramp.waited} waited, peak {ramp.peak})")  # fmt: skip
        if not result["complete"]:
            print(f"INCOMPLETE after {result['first_sweep_s']:.1f} s: "
                  f"{result['never_polled']} host(s) never polled, "
                  f"{result['failed_polls']} failed poll(s); "
                  f"health {dict(result['health'])}")  # fmt: skip
            sys.exit(1)
        bare, bare_cpu, bare_errors = trio.run(bare_sweep, root, addresses, ramp.limit)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"cold start until every host was polled once: {result['polled_once_s']:.1f} s")
        print(f"first sweep (health + info + patches + packages, all stored): "
              f"{result['first_sweep_s']:.1f} s, manager CPU {result['first_cpu_s']:.1f} s "
              f"(system {result['first_system_s']:.1f} s, "
              f"{result['first_cpu_s'] * 1000 / n:.1f} ms per host), "
              f"{result['rows_first']} DB rows, {result['failed_first']} failed polls")  # fmt: skip
        print(f"second sweep (same data): {result['second_sweep_s']:.1f} s, manager CPU "
              f"{result['second_cpu_s']:.1f} s, {result['rows_second']} DB rows")  # fmt: skip
        print(f"failed polls in both sweeps: {result['failed_polls']}")
        print(f"bare httpx, same four requests per host, same ramp: {bare:.1f} s, "
              f"CPU {bare_cpu:.1f} s, {bare_errors} errors")  # fmt: skip
        print(f"ratio (second sweep / bare): {result['second_sweep_s'] / bare:.2f}")
        print(f"memory per host actor at rest (RSS growth after the idle connections closed, "
              f"gc and malloc_trim, / hosts): {result['kb_per_actor']:.0f} KB; "
              f"peak RSS {peak:.0f} MB")  # fmt: skip
        pools, conns = result["still_open"]
        print(f"  agent pools / connections still open at rest: {pools} / {conns}; "
              f"trio tasks per actor: {result['tasks_per_actor']:.1f}")  # fmt: skip
        heap = result["heap"]
        per = {k: v / 1024 / n for k, v in heap.items()}
        if "pymalloc_live" in per:
            print(f"  Python objects (pymalloc live blocks): {per['pymalloc_live']:.0f} KB/actor "
                  f"in {heap['pymalloc_arenas']:.0f} more 1 MiB arenas "
                  f"({heap['pymalloc_arenas'] * 1024 / n:.0f} KB/actor held)")  # fmt: skip
        if "malloc_in_use" in per:
            print(f"  C heap (glibc malloc in use: OpenSSL, large Python objects, pymalloc "
                  f"arenas): {per['malloc_in_use']:.0f} KB/actor; free but kept "
                  f"{per['malloc_free']:.0f} KB/actor")  # fmt: skip
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
