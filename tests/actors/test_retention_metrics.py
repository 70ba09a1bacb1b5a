"""The composition root's retention task end to end in-process: a run on the real database
deletes old rows, records itself in retention_runs, and /metrics shows what it deleted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2

from storage.retention import last_finished_run

from ..web.conftest import WebRig, anonymous, client, web_rig  # noqa: F401 (fixtures)


def old_transition(conn: Any) -> None:
    host = conn.execute("INSERT INTO hosts (name) VALUES ('old.example.org') RETURNING id")
    host_id = host.fetchone()[0]
    conn.execute(
        "INSERT INTO host_health_history (host_id, at, from_state, to_state)"
        " VALUES (%s, now() - interval '40 days', 'healthy', 'degraded'),"
        " (%s, now() - interval '1 day', 'degraded', 'healthy')",
        (host_id, host_id),
    )


async def test_a_retention_run_is_recorded_and_its_deleted_rows_are_in_metrics(
    web_rig: WebRig,  # noqa: F811
    client: httpx2.AsyncClient,  # noqa: F811
) -> None:
    await web_rig.db.run(old_transition)
    task = web_rig.system.retention
    assert task is not None
    summary = await task.run_once()
    assert summary.deleted["host_health_history"] == 1  # 30 days kept by default
    last = await web_rig.db.run(last_finished_run)
    assert last is not None and last.deleted["host_health_history"] == 1
    assert abs((last.operational_cutoff - summary.cutoffs.operational).total_seconds()) < 1
    text = (await client.get("/metrics")).text
    assert 'patchmgr_retention_deleted_rows_total{table="host_health_history"} 1' in text
    assert 'patchmgr_retention_runs_total{outcome="ok"} 1' in text
    stamp = [
        line for line in text.splitlines()
        if line.startswith("patchmgr_retention_last_run_timestamp_seconds ")
    ]  # fmt: skip
    assert stamp and abs(float(stamp[0].split()[1]) - dt.datetime.now(dt.UTC).timestamp()) < 60
