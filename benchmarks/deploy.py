"""Deploy to N simulated hosts at once (R-11.4: every agent job dispatched within 60 s).

    .venv/bin/python benchmarks/deploy.py --count 2500 --time-scale 0.01

The simulator runs in its own process; the manager side is the real scheduler, job coordinator,
host actors and PostgreSQL. Prints the time until every agent accepted its job, the time until
the job finished, manager CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_sweep import cpu_seconds, start_simulator

from ca import CertificateAuthority
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from simulator import FleetSpec
from storage import Database, EmbeddedPostgres, JobSpec, insert_host, migrate

BASE = "127.201.0.1"


async def run(root: Path, count: int) -> dict[str, float]:
    conf = root / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(
        '[agents]\nallow_addresses = ["127.0.0.0/8"]\n'
        "[polling]\nhealth_interval_s = 86400\npatch_interval_s = 86400\n"
        "request_timeout_s = 60.0\nconnect_timeout_s = 60.0\n"
    )
    cluster = EmbeddedPostgres(root / "pg")
    async with trio.open_nursery() as nursery:
        db = Database(await nursery.start(cluster.run), size=8)
        await db.open()
        await db.run(migrate)
        addresses = FleetSpec(count=count, base_address=BASE).address_list()

        def insert_all(conn: Any) -> None:
            with conn.transaction():
                for address in addresses:
                    insert_host(conn, name=address, address=address)

        await db.run(insert_all)
        system = build_actor_system(
            ConfigStore(conf), Storage(db, cluster, "bench"), CertificateAuthority(root / "ca")
        )
        async with trio.open_nursery() as actors:  # stopped before the pool closes
            await actors.start(system.sink.run)
            await actors.start(system.scheduler.run)
            result = await measure(system, db, count)
            actors.cancel_scope.cancel()
        await db.close()
        nursery.cancel_scope.cancel()
    return result


async def measure(system: Any, db: Database, count: int) -> dict[str, float]:
    await system.fleet.wait_until(
        lambda s: (
            len(s) == count
            and all(x.phase.value == "idle" and x.last_success is not None for x in s)
        )
    )
    ids = sorted(system.scheduler.hosts)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    job_id = await system.handle.create_job(JobSpec(kind="patch", schedule="now"), ids)
    dispatched = finished = 0.0
    while not finished:
        row = await db.run(
            lambda conn: conn.execute(
                "SELECT count(*) FILTER (WHERE agent_job_id IS NOT NULL OR state IN"
                " ('succeeded', 'failed')), count(*) FILTER (WHERE state IN ('succeeded',"
                " 'failed', 'skipped')) FROM job_hosts WHERE job_id = %s",
                (job_id,),
            ).fetchone()
        )
        if not dispatched and row[0] == count:
            dispatched = time.perf_counter() - t0
        if row[1] == count:
            finished = time.perf_counter() - t0
        await trio.sleep(0.2)
    cpu = cpu_seconds() - cpu0
    return {"dispatched": dispatched, "finished": finished, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--profile", choices=("small", "realistic"), default="realistic",
                        help="simulated package lists (default realistic)")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-deploy-"))
    root.chmod(0o755)
    simulator = start_simulator(root, args.count, args.profile)
    keep = Path("/tmp/pm-deploy-simulator.log")
    try:
        result = trio.run(run, root, args.count)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"hosts: {args.count}, profile {args.profile}, simulator time scale 0.01")
        print(f"every agent job accepted (agent job id stored) after {result['dispatched']:.1f} s")
        print(f"job finished after {result['finished']:.1f} s; manager CPU {result['cpu']:.1f} s")
        print(f"peak RSS of the manager: {peak:.0f} MB")
    finally:
        if simulator.poll() is not None:
            print(f"the simulator died (exit {simulator.returncode}); its log: {keep}")
        shutil.copy(root / "simulator.log", keep)
        simulator.send_signal(signal.SIGINT)
        simulator.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
