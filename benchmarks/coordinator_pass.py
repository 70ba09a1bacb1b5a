"""The job coordinator's pass cost with N active rows (issue 17 point 3), old and new side by side.

    .venv/bin/python benchmarks/coordinator_pass.py --rows 2500 --packages 1200

No agents and no actors: an embedded PostgreSQL with N hosts and one apply-now job of N rows in
batches of 100, of which the first ``--finished`` rows succeeded with package snapshots of
``--packages`` packages before and after (what a real job leaves). Then, each the median of
``--passes`` passes:

- old: what every pass did before (read windows, every active job with every row joined to its
  host and its snapshots, decide);
- new, full read: what the coordinator does at start, after the change feed reconnects and
  every 60 s (lean rows, no snapshots);
- new, tick: a pass with nothing heard (decide in memory);
- new, 100 rows heard: a pass after 100 rows changed (read those 100 rows, decide).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.jobs import JobCoordinator, batches_for
from actors.persist import DatabaseJobStore
from actors.rollout import decide
from storage import Database, EmbeddedPostgres, JobSpec, active_jobs, create_job, migrate
from storage.coordinator import JobNotices


def wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def median(passes: int, step: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        await step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def run(root: Path, rows: int, finished: int, packages: int, passes: int) -> None:
    cluster = EmbeddedPostgres(root / "pg")
    async with trio.open_nursery() as nursery:
        db = Database(await nursery.start(cluster.run), size=4)
        await db.open()
        await db.run(migrate)

        def fill(conn: Any) -> int:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO hosts (name, address) SELECT 'h' || i,"
                    " ('127.202.0.0'::inet + i) FROM generate_series(1, %s) i",
                    (rows,),
                )
                ids = [r[0] for r in conn.execute("SELECT id FROM hosts ORDER BY id")]
                spec = JobSpec(kind="patch", schedule="now", batch_size=100)
                job_id = create_job(conn, spec, batches_for(spec, ids))
                conn.execute(
                    "UPDATE job_hosts SET state = 'succeeded', attempts = 1,"
                    " finished_at = now() WHERE id IN (SELECT id FROM job_hosts"
                    " WHERE job_id = %s ORDER BY id LIMIT %s)",
                    (job_id, finished),
                )
                conn.execute(
                    "INSERT INTO job_host_snapshots (row_id, packages_before, packages_after)"
                    " SELECT r.id, v.m, v.m FROM job_hosts r, (SELECT jsonb_object_agg("
                    " 'package-name-' || i, '1.2.' || i || '-1ubuntu0.22.04.1') AS m"
                    " FROM generate_series(1, %s) i) v WHERE r.state = 'succeeded'",
                    (packages,),
                )
                conn.execute("UPDATE jobs SET status = 'running' WHERE id = %s", (job_id,))
            conn.execute("VACUUM ANALYZE")
            return job_id

        job_id = await db.run(fill)
        store = DatabaseJobStore(db)

        async def old_pass() -> None:
            now = wall()
            windows = await store.windows()
            for job, job_rows in await db.run(active_jobs):
                decide(job, job_rows, lambda h: windows.open_until(h, now), lambda h: "", now,
                       lambda h: windows.window_ahead(h, now))  # fmt: skip

        coordinator = JobCoordinator(store, wall=wall)
        await coordinator.run_once()  # first pass: permits for the current batch written
        changed = await db.run(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT id FROM job_hosts WHERE job_id = %s AND state <> 'succeeded'"
                    " ORDER BY id LIMIT 100",
                    (job_id,),
                )
            ]
        )

        async def full_pass() -> None:
            coordinator.heard(None)
            await coordinator.run_once()

        async def tick_pass() -> None:
            await coordinator.run_once()

        async def heard_pass() -> None:
            coordinator.heard(JobNotices(rows={job_id: set(changed)}))
            await coordinator.run_once()

        old = await median(passes, old_pass)
        full = await median(passes, full_pass)
        tick = await median(passes, tick_pass)
        heard = await median(passes, heard_pass)
        print(f"{rows} active rows ({finished} finished with {packages}-package snapshots),"
              f" median of {passes} passes:")  # fmt: skip
        print(f"  old pass (read everything, snapshots included): {old * 1000:8.1f} ms")
        print(f"  new full read (start, reconnect, every 60 s):    {full * 1000:8.1f} ms")
        print(f"  new pass, nothing heard (decide in memory):      {tick * 1000:8.1f} ms")
        print(f"  new pass, 100 rows heard:                        {heard * 1000:8.1f} ms")
        print(f"  rows held in memory: {coordinator.rows_held()}")
        await db.close()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2500)
    parser.add_argument("--finished", type=int, default=1000)
    parser.add_argument("--packages", type=int, default=1200)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-coordinator-"))
    root.chmod(0o755)
    try:
        trio.run(run, root, args.rows, args.finished, args.packages, args.passes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
