"""Deploy to N simulated hosts at once, then roll it back (R-11.4: every agent job dispatched
within 60 s).

    .venv/bin/python benchmarks/deploy.py --count 2500

The simulator runs in its own process; the manager side is the real scheduler, job coordinator,
host actors and PostgreSQL. Then the whole job is rolled back (one new job for every host whose
package manager can install an older version, as the web offers it). Prints, for the
deployment and for the rollback, the time until
every agent accepted its job, the time until the job finished, the rows by final state, manager
CPU seconds, and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
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
from maintenance import downgrade_refusal
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from simulator import FleetSpec
from storage import Database, EmbeddedPostgres, JobSpec, insert_host, migrate

# PM_BENCH_BASE moves the simulated fleet (two runs at once need different ranges).
BASE = os.environ.get("PM_BENCH_BASE", "127.201.0.1")


async def run(root: Path, count: int) -> dict[str, dict[str, Any]]:
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


async def measure(system: Any, db: Database, count: int) -> dict[str, dict[str, Any]]:
    await system.fleet.wait_until(
        lambda s: (
            len(s) == count
            and all(x.phase.value == "idle" and x.last_success is not None for x in s)
        )
    )
    ids = sorted(system.scheduler.hosts)
    cpu0 = cpu_seconds()
    job_id = await system.handle.create_job(JobSpec(kind="patch", schedule="now"), ids)
    deploy = await track(db, job_id, time.perf_counter())
    deploy["cpu"] = cpu_seconds() - cpu0
    # Roll the whole job back where it can work, as the web offers it: one new job for
    # every host whose package manager can install an older version (maintenance.downgrade_refusal).
    hosts = await db.run(lambda c: c.execute("SELECT id, os, os_version FROM hosts").fetchall())
    able = [i for i, os_name, version in hosts if not downgrade_refusal(os_name, version)]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    rollback_id = await system.handle.rollback(job_id, able, created_by="benchmark")
    rollback = await track(db, rollback_id, t0)
    rollback["cpu"] = cpu_seconds() - cpu0
    return {"deploy": deploy, "rollback": rollback}


async def track(db: Database, job_id: int, t0: float) -> dict[str, Any]:
    """Until every row of the job is final: when every row had its agent job accepted (or was
    already final), when the last row ended, and the rows by final state."""
    dispatched = finished = 0.0
    while not finished:
        total, sent, final = await db.run(
            lambda conn: conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE agent_job_id IS NOT NULL OR state IN"
                " ('succeeded', 'failed', 'skipped', 'cancelled')), count(*) FILTER (WHERE state"
                " IN ('succeeded', 'failed', 'skipped', 'cancelled')) FROM job_hosts"
                " WHERE job_id = %s",
                (job_id,),
            ).fetchone()
        )
        if not dispatched and total and sent == total:
            dispatched = time.perf_counter() - t0
        if total and final == total:
            finished = time.perf_counter() - t0
        await trio.sleep(0.2)
    states = await db.run(
        lambda conn: dict(
            conn.execute(
                "SELECT state || coalesce(' ' || nullif(error_code, ''), ''), count(*)"
                " FROM job_hosts WHERE job_id = %s GROUP BY 1",
                (job_id,),
            ).fetchall()
        )
    )
    failure = await db.run(
        lambda conn: conn.execute(
            "SELECT error_message || ' ' || error_stderr FROM job_hosts"
            " WHERE job_id = %s AND state = 'failed' LIMIT 1",
            (job_id,),
        ).fetchone()
    )
    return {
        "dispatched": dispatched, "finished": finished, "rows": total, "states": states,
        "failure": failure[0][:300] if failure else "",
    }  # fmt: skip


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
        for name, r in result.items():
            print(f"{name}: {r['rows']} rows {r['states']}; every agent job accepted (agent job "
                  f"id stored) after {r['dispatched']:.1f} s; job finished after "
                  f"{r['finished']:.1f} s; manager CPU {r['cpu']:.1f} s")  # fmt: skip
            if r["failure"]:
                print(f"  a failed row: {r['failure']}")
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
