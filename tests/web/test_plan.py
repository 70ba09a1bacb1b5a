"""The deployment plan (issue 16 point 2): one computation for the Deploy page, the JSON API and
job creation, so the preview predicts what the job does; the host re-checks its pending list
when the job runs and records the drift."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx2
import pytest
import trio

from simulator import Fleet
from storage import get_job, job_rows, set_paused

from .conftest import WebRig, form_token
from .test_form_errors import shown_errors
from .test_jobs_api import registered

pytestmark = pytest.mark.timeout(120)


async def finished(web_rig: WebRig, job_id: int) -> None:
    with trio.fail_after(60):
        while (await web_rig.db.run(get_job, job_id)).status in ("queued", "running"):
            await web_rig.system.scheduler.jobs.wait_pass()  # type: ignore[union-attr]


async def test_plan_preview_matches_what_the_job_then_does(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(3)
    ids = await registered(web_rig, client, fleet)
    await web_rig.db.run(set_paused, ids[2], True)
    # Two patches chosen one by one: the first host's first, and one only the second has.
    offered = [sorted(a.profile.upgradable) for a in fleet.agents[:2]]
    chosen = [offered[0][0], *[n for n in offered[1] if n not in offered[0]][:1]]
    draft = {
        "group": "web",
        "all_hosts": True,
        "schedule": "now",
        "selection": "list",
        "packages": chosen,
        "batch_size": 1,
    }
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    assert plan["hosts_total"] == 3 and plan["skipped"] == 1
    assert [b["number"] for b in plan["batches"]] == [0, 1, 2]
    by_host = {h["host_id"]: h for h in plan["hosts"]}
    assert by_host[ids[2]]["skip"] == "PAUSED"
    assert by_host[ids[2]]["reason"] == "the host is paused"
    for host_id, agent in zip(ids[:2], fleet.agents[:2], strict=True):
        expected = [
            [name, agent.profile.installed.get(name, ""), agent.profile.upgradable[name]]
            for name in sorted(chosen)
            if name in agent.profile.upgradable
        ]
        got = [[c["name"], c["from_version"], c["to_version"]] for c in by_host[host_id]["changes"]]
        assert got == expected, host_id
        assert by_host[host_id]["skip"] == ""
    created = await client.post("/api/v1/jobs", json=draft)
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    rows = {r.host_id: r for r in await web_rig.db.run(job_rows, job_id)}
    assert (rows[ids[2]].state, rows[ids[2]].error_code) == ("skipped", "PAUSED")
    for host_id in ids[:2]:
        row, planned = rows[host_id], by_host[host_id]
        assert row.state == "succeeded", (row.error_code, row.error_message)
        assert row.batch == planned["batch"]
        assert row.planned == {c["name"]: c["to_version"] for c in planned["changes"]}
        before, after = row.packages_before or {}, row.packages_after or {}
        changed = {n: v for n, v in after.items() if before.get(n) != v}
        assert changed == row.planned  # exactly the planned packages, to the planned versions
        assert row.drift == ""


async def test_drift_is_recorded_when_a_newer_version_appears_after_the_plan(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    agent = fleet.agents[0]
    name = sorted(agent.profile.upgradable)[0]
    draft = {"host_ids": [host_id], "selection": "list", "packages": [name]}
    # In the host's window (it has none): skipped NO_WINDOW at once, as the plan says.
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    assert plan["hosts"][0]["skip"] == "NO_WINDOW"
    created = await client.post("/api/v1/jobs", json=draft)
    (row,) = await web_rig.db.run(job_rows, created.json()["job_id"])
    assert (row.state, row.error_code) == ("skipped", "NO_WINDOW")
    # The repository moves on after the last poll: the plan still says the polled version.
    planned_version = agent.profile.upgradable[name]
    agent.profile.upgradable[name] = planned_version + ".1"
    now = {**draft, "schedule": "now"}
    plan = (await client.post("/api/v1/jobs/plan", json=now)).json()
    assert plan["hosts"][0]["changes"][0]["to_version"] == planned_version
    created = await client.post("/api/v1/jobs", json=now)
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    (row,) = await web_rig.db.run(job_rows, job_id)
    assert row.state == "succeeded", (row.error_code, row.error_message)
    assert row.drift == f"1 package newer than planned ({name})"
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    assert f"1 package newer than planned ({name})" in page


async def test_deploy_page_shows_the_plan_and_deploys_only_the_ticked_patches(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    ids = await registered(web_rig, client, fleet)
    agent = fleet.agents[0]
    name = sorted(agent.profile.upgradable)[0]
    page = await client.get("/deploy", params={"host_ids": str(ids[0])})
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert f'data-plan-host="{ids[0]}"' in text
    current = agent.profile.installed.get(name) or "—"
    assert f"{name}</span> {current} → {agent.profile.upgradable[name]}" in text
    assert "skipped</strong> (NO_WINDOW)" in text  # the default: in the host's window; none
    token = form_token(page.text)
    form = {
        "host_ids": str(ids[0]),
        "schedule": "now",
        "patch": [name],
        "csrf_token": token,
        "action": "plan",
    }
    shown = await client.post("/deploy", data=form)
    assert shown.status_code == 200
    plan_rows = re.findall(r'<span class="pkg">([^<]+)</span>', shown.text)
    assert plan_rows == [name]  # only the ticked patch
    assert "1</strong> package change(s) on 1 host(s)" in shown.text
    created = await client.post("/deploy", data={**form, "action": "deploy"})
    assert created.status_code == 303, shown_errors(created.text)
    job_id = int(created.headers["location"].split("?")[0].rsplit("/", 1)[1])
    job = await web_rig.db.run(get_job, job_id)
    assert (job.selection, job.packages) == ("list", (name,))
    bad = await client.post("/deploy", data={**form, "batch_percent": "0", "action": "plan"})
    assert shown_errors(bad.text) == {"batch_percent": "must be between 1 and 100"}
