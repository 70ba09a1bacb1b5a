"""A full health + patch sweep of N simulated agents by the real actor system (R-11.2, R-11.3).

    .venv/bin/python benchmarks/fleet_sweep.py --count 2500

The simulator runs in its own process (`patch-manager simulate`), so the CPU figures are the
manager's alone. The manager side runs the real scheduler, host actors, agent clients and
PostgreSQL writes (embedded PostgreSQL in a temporary directory). Then a bare httpx loop makes
the same four requests per host (health, system/info, patches, packages) for comparison.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import trio

from actors import HealthState
from ca import CertificateAuthority, agent_client_context
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from storage import Database, EmbeddedPostgres, insert_host, migrate

BASE = "127.201.0.1"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_simulator(root: Path, count: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "simulate", "--count", str(count),
         "--base-address", BASE, "--time-scale", "0.01", "--data-dir", str(root),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=(root / "simulator.log").open("wb"),
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(b"control socket"):
            return process
    raise RuntimeError("the simulator did not start")


async def manager_sweep(root: Path, count: int, addresses: list[str]) -> dict[str, Any]:
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
        await nursery.start(system.sink.run)
        rss_before, cpu_before, t0 = rss_mb(), cpu_seconds(), time.perf_counter()
        await nursery.start(system.scheduler.run)

        def swept(snaps: list[Any]) -> bool:
            return len(snaps) == count and all(
                s.health is HealthState.HEALTHY and s.phase.value == "idle"
                and s.last_success is not None for s in snaps
            )  # fmt: skip

        await system.fleet.wait_until(swept)
        first = time.perf_counter() - t0
        first_cpu = cpu_seconds() - cpu_before
        await system.sink.flush()
        rows_first = (system.sink.stats.state_rows + system.sink.stats.transition_rows
                      + system.sink.stats.patch_rows)  # fmt: skip
        at_rest = (rss_mb() - rss_before) * 1024 / count

        # Second sweep: the same data again (nothing new to store).
        polls = {h: r.actor.polls for h, r in system.scheduler.hosts.items() if r.actor}
        t1, cpu1 = time.perf_counter(), cpu_seconds()
        system.handle.refresh()

        def resweep(snaps: list[Any]) -> bool:
            return all(
                (r.actor is not None and r.actor.polls >= polls.get(h, 0) + 2)
                for h, r in system.scheduler.hosts.items()
            ) and all(s.phase.value == "idle" for s in snaps)

        await system.fleet.wait_until(resweep)
        second = time.perf_counter() - t1
        second_cpu = cpu_seconds() - cpu1
        await system.sink.flush()
        rows_total = (system.sink.stats.state_rows + system.sink.stats.transition_rows
                      + system.sink.stats.patch_rows)  # fmt: skip
        nursery.cancel_scope.cancel()
    await db.close()
    return {
        "first_sweep_s": first, "first_cpu_s": first_cpu, "rows_first": rows_first,
        "second_sweep_s": second, "second_cpu_s": second_cpu,
        "rows_second": rows_total - rows_first, "kb_per_actor": at_rest,
    }  # fmt: skip


async def bare_sweep(root: Path, addresses: list[str]) -> tuple[float, float]:
    ca = CertificateAuthority(root / "ca")
    ctx = agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path)
    t0, cpu0 = time.perf_counter(), cpu_seconds()

    async def one(address: str) -> None:
        async with httpx2.AsyncClient(verify=ctx, base_url=f"https://{address}:12443",
                                      timeout=60) as client:  # fmt: skip
            for path in ("/health", "/api/v1/system/info", "/api/v1/patches", "/api/v1/packages"):
                (await client.get(path)).raise_for_status()

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(one, address)
    return time.perf_counter() - t0, cpu_seconds() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-sweep-"))
    root.chmod(0o755)
    simulator = start_simulator(root, args.count)
    try:
        from simulator import FleetSpec

        addresses = FleetSpec(count=args.count, base_address=BASE).address_list()
        result = trio.run(manager_sweep, root, args.count, addresses)
        bare, bare_cpu = trio.run(bare_sweep, root, addresses)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = args.count
        print(f"hosts: {n}")
        print(f"first sweep (health + info + patches + packages, all stored): "
              f"{result['first_sweep_s']:.1f} s, manager CPU {result['first_cpu_s']:.1f} s, "
              f"{result['rows_first']} DB rows")  # fmt: skip
        print(f"second sweep (same data): {result['second_sweep_s']:.1f} s, manager CPU "
              f"{result['second_cpu_s']:.1f} s, {result['rows_second']} DB rows")  # fmt: skip
        print(f"bare httpx, same four requests per host: {bare:.1f} s, CPU {bare_cpu:.1f} s")
        print(f"ratio (second sweep / bare): {result['second_sweep_s'] / bare:.2f}")
        print(f"memory per host actor at rest: {result['kb_per_actor']:.0f} KB; "
              f"peak RSS {peak:.0f} MB")  # fmt: skip
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
