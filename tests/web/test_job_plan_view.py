"""The job page and API against the plan (issue 16 points 2, 5, 7; r5/J): the stored plan per
row beside what happened, per-row queued times, hosts with nothing pending skipped in the plan
and ending succeeded, apply-now hosts unreachable at planning tried when the job runs, and an
honest 'Roll back this job' naming hosts by display name."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx2
import psycopg
import pytest

from simulator import Fleet
from storage import get_job, job_rows

from .conftest import WebRig
from .test_jobs_api import registered
from .test_plan import finished

pytestmark = pytest.mark.timeout(120)


async def named(web_rig: WebRig, ids: list[int]) -> dict[int, str]:
    """Give the hosts display names (web-ID) that differ from their addresses."""

    def run(conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE hosts SET display_name = 'web-' || id WHERE id = ANY(%s)", (ids,))

    await web_rig.db.run(run)
    return {i: f"web-{i}" for i in ids}


async def test_the_job_api_and_page_show_the_stored_plan_beside_what_each_row_did(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    ids = await registered(web_rig, client, fleet)
    draft = {"host_ids": ids, "schedule": "now"}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    created = await client.post("/api/v1/jobs", json=draft)
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)

    detail = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    stored = {h["host_id"]: h for h in detail["plan"]["hosts"]}
    for host in plan["hosts"]:
        got = stored[host["host_id"]]
        assert (got["batch"], got["skip"], got["reboot"]) == (
            host["batch"], host["skip"], host["reboot"],
        )  # fmt: skip
        assert got["changes"] == [
            {"name": c["name"], "from_version": c["from_version"], "to_version": c["to_version"]}
            for c in host["changes"]
        ]
    schema = (await client.get("/api/v1/openapi.json")).json()["components"]["schemas"]
    assert "plan" in schema["JobDetail"]["properties"]

    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    for row in await web_rig.db.run(job_rows, job_id):
        cell = re.search(rf'data-row-plan="{row.id}">(.*?)</td>', page, re.S)
        assert cell is not None, row.id
        first = stored[row.host_id]["changes"][0]
        assert f"{first['name']} {first['from_version']} → {first['to_version']}" in cell[1]
        # Every planned change made, to the planned version (a kernel upgrade also installs
        # the new kernel's package: named as a change the plan did not list).
        assert "as planned" in cell[1] or "also changed" in cell[1], cell[1]
        assert "not changed" not in cell[1] and "went to" not in cell[1], cell[1]
        timing = re.search(rf'data-row-timing="{row.id}">(.*?)</td>', page, re.S)
        assert timing is not None and row.queued_at is not None
        assert f'queued <time datetime="{row.queued_at.isoformat()}"' in timing[1]
        assert "waited" in timing[1]


async def test_a_host_with_nothing_pending_is_planned_skipped_and_its_job_succeeds(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    absent = "not-pending-here"
    assert absent not in fleet.agents[0].profile.upgradable
    draft = {"host_ids": [host_id], "schedule": "now", "selection": "list", "packages": [absent]}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    (planned,) = plan["hosts"]
    assert planned["skip"] == "NOTHING_PENDING" and plan["skipped"] == 1
    assert "ends succeeded" in planned["reason"]
    created = await client.post("/api/v1/jobs", json=draft)
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    (row,) = await web_rig.db.run(job_rows, job_id)
    assert (row.state, row.error_code) == ("succeeded", "NOTHING_PENDING")
    assert row.agent_job_id is None  # nothing was sent
    assert (await web_rig.db.run(get_job, job_id)).status == "succeeded"


async def test_an_apply_now_host_unreachable_at_planning_is_tried_when_the_job_runs(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)

    def down(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE hosts SET health = 'unreachable', health_reason = 'connection refused'"
            " WHERE id = %s",
            (host_id,),
        )

    await web_rig.db.run(down)  # as its last poll left it; the agent is back meanwhile
    draft = {"host_ids": [host_id], "schedule": "now"}
    (planned,) = (await client.post("/api/v1/jobs/plan", json=draft)).json()["hosts"]
    assert planned["skip"] == ""
    assert "tried again when the job runs" in planned["reason"]
    created = await client.post("/api/v1/jobs", json=draft)
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    (row,) = await web_rig.db.run(job_rows, job_id)
    assert row.state == "succeeded", (row.error_code, row.error_message)
    assert row.agent_job_id is not None


async def test_roll_back_this_job_is_disabled_with_the_reason_when_no_host_can(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)  # debian, debian: apt cannot downgrade
    ids = await registered(web_rig, client, fleet)
    names = await named(web_rig, ids)
    created = await client.post("/api/v1/jobs", json={"host_ids": ids, "schedule": "now"})
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    button = re.search(r'<button[^>]*id="rollback-job"[^>]*>', page)
    assert button is not None and "disabled" in button[0]
    assert 'id="rollback-job-why"' in page and "apt hosts cannot go back" in page
    refused = (await client.post(f"/api/v1/jobs/{job_id}/rollback", json={})).json()
    message = refused["error"]["details"]["fields"]["host_id"]
    assert all(name in message for name in names.values()), message
    assert f"host {ids[0]}" not in message


async def test_rollback_confirmations_name_hosts_by_display_name(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(5)  # debian, debian, ubuntu, ubuntu, rocky
    ids = await registered(web_rig, client, fleet)
    names = await named(web_rig, ids)
    created = await client.post("/api/v1/jobs", json={"host_ids": ids, "schedule": "now"})
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    apt = ", ".join(names[i] for i in ids[:4])
    assert f"(except {apt}: the package manager cannot go back)?" in page
    assert f'data-confirm="Roll back {names[ids[4]]}?"' in page
    assert f'aria-label="Roll back {names[ids[4]]}"' in page


async def test_the_job_page_numbers_batches_from_one_as_the_deploy_plan_does(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    """The deploy page's plan says 'Batch 1', 'Batch 2' (the API's 0-based batch + 1): the job
    page's Batch column gives each host the same number as the plan did."""
    fleet: Fleet = await start_fleet(2)
    ids = await registered(web_rig, client, fleet)
    draft = {"host_ids": ids, "schedule": "now", "batch_size": 1}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    assert sorted(h["batch"] for h in plan["hosts"]) == [0, 1]
    job_id = (await client.post("/api/v1/jobs", json=draft)).json()["job_id"]
    await finished(web_rig, job_id)
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    shown = {}
    for row in await web_rig.db.run(job_rows, job_id):
        cell = re.search(rf'<td data-row-batch="{row.id}">(\d+)</td>', page)
        assert cell is not None, row.id
        shown[row.host_id] = int(cell[1])
    assert shown == {h["host_id"]: h["batch"] + 1 for h in plan["hosts"]}
