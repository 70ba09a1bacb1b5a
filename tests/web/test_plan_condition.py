"""The plan against the hosts' live condition (issue 16 review rvB points 2, 3, 8): a host
with nothing pending is planned NOTHING_PENDING (its row starts succeeded) only for an apply-now
job on a host whose data is current; a failing host's plan row says so; window jobs decide
at execution; plan rows keep the address beside a display name."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import httpx2
import psycopg
import pytest
import trio

from simulator import Fleet
from storage import get_job, insert_host, job_rows, list_jobs, set_paused

from .conftest import WebRig
from .test_jobs_api import registered
from .test_plan import finished

pytestmark = pytest.mark.timeout(120)

ABSENT = "not-pending-here"


async def failing(web_rig: WebRig, client: httpx2.AsyncClient, fleet: Fleet, host_id: int) -> None:
    """Take the host's agent down and wait until its poll fails (condition ``failing``)."""
    fleet.apply_faults(fleet.agents[0].address, {"down": True})
    refreshed = await client.post("/api/v1/hosts/refresh", json={"host_ids": [host_id]})
    assert refreshed.is_success, refreshed.text
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda snaps: any(s.host_id == host_id and s.condition == "failing" for s in snaps)
        )


async def test_a_failing_host_with_nothing_pending_is_not_planned_nothing_pending_nor_succeeded(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    await failing(web_rig, client, fleet, host_id)
    draft = {"host_ids": [host_id], "schedule": "now", "selection": "list", "packages": [ABSENT]}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    (planned,) = plan["hosts"]
    assert planned["skip"] == "" and plan["skipped"] == 0
    assert "re-checks when the job runs" in planned["reason"], planned["reason"]
    assert "poll failing since" in planned["reason"], planned["reason"]
    created = await client.post("/api/v1/jobs", json=draft)
    assert created.status_code == 201, created.text
    (row,) = await web_rig.db.run(job_rows, created.json()["job_id"])
    assert row.state != "succeeded" and not row.error_code


async def test_a_failing_host_planned_with_stored_changes_says_its_data_may_be_out_of_date(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    await failing(web_rig, client, fleet, host_id)
    draft = {"host_ids": [host_id], "schedule": "now", "selection": "all"}
    (planned,) = (await client.post("/api/v1/jobs/plan", json=draft)).json()["hosts"]
    assert planned["changes"], planned  # from the stored (last good) poll
    assert "failing: poll failing since" in planned["reason"], planned["reason"]
    assert "data may be out of date" in planned["reason"]


async def test_a_window_job_with_nothing_pending_leaves_the_row_waiting_to_decide_in_the_window(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)  # not open now
    window = await client.post(
        "/api/v1/windows",
        json={
            "name": "nightly", "host_id": host_id, "recurrence": "daily", "timezone": "UTC",
            "start_date": "2020-01-01", "start_time": later.strftime("%H:%M"),
            "duration_minutes": 60,
        },
    )  # fmt: skip
    assert window.is_success, window.text
    draft = {
        "host_ids": [host_id], "schedule": "window", "selection": "list", "packages": [ABSENT],
    }  # fmt: skip
    (planned,) = (await client.post("/api/v1/jobs/plan", json=draft)).json()["hosts"]
    assert planned["skip"] == "", planned
    assert "re-checks when the job's window opens" in planned["reason"], planned["reason"]
    created = await client.post("/api/v1/jobs", json=draft)
    assert created.status_code == 201, created.text
    (row,) = await web_rig.db.run(job_rows, created.json()["job_id"])
    assert row.state not in ("succeeded", "skipped") and not row.error_code


async def test_plan_rows_keep_the_address_of_a_host_shown_by_its_display_name(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)  # registered by its address

    def rename(conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE hosts SET display_name = 'frontend' WHERE id = %s", (host_id,))

    await web_rig.db.run(rename)
    draft = {"host_ids": [host_id], "schedule": "now"}
    (planned,) = (await client.post("/api/v1/jobs/plan", json=draft)).json()["hosts"]
    assert (planned["name"], planned["address"]) == ("frontend", fleet.agents[0].address)


async def test_the_plans_predicted_status_is_the_jobs_final_status_for_paused_and_nothing_pending(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    ids = await registered(web_rig, client, fleet)
    await web_rig.db.run(set_paused, ids[0], True)
    draft = {"host_ids": ids, "schedule": "now", "selection": "list", "packages": [ABSENT]}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    assert [h["skip"] for h in plan["hosts"]] == ["PAUSED", "NOTHING_PENDING"]
    assert plan["predicted_status"] == "failed"  # nothing is sent to any host
    created = await client.post("/api/v1/jobs", json=draft)
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    assert (await web_rig.db.run(get_job, job_id)).status == plan["predicted_status"]
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    nothing = next(r for r in await web_rig.db.run(job_rows, job_id) if r.host_id == ids[1])
    assert f'data-row-note="{nothing.id}">nothing to do: ' in page
    row_html = re.search(
        rf'<tr[^>]*>((?:(?!</tr>).)*data-job-row="{nothing.id}".*?)</tr>', page, re.S
    )
    assert row_html is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row_html[1], re.S)
    assert "NOTHING_PENDING" not in cells[8]  # the Error column: not an error
    # A finished job with no waiting and no failed host: both actions disabled, with why.
    assert re.search(r'<button[^>]*id="cancel-job"[^>]*disabled', page)
    assert re.search(r'<button[^>]*id="retry-job"[^>]*disabled', page)
    assert 'id="cancel-job-why">no host is waiting<' in page
    assert 'id="retry-job-why">no host failed<' in page


async def test_a_job_created_with_a_plan_digest_is_refused_409_when_an_option_changed_the_plan(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address=None, groups=["g"])
    )
    draft = {"host_ids": [row.id], "schedule": "now", "reboot_delay_s": 60}
    digest = (await client.post("/api/v1/jobs/plan", json=draft)).json()["digest"]
    for changed in ({"reboot_delay_s": 120}, {"failure_threshold": 0}, {"canary": True}):
        refused = await client.post(
            "/api/v1/jobs", json={**draft, **changed, "plan_digest": digest}
        )
        assert refused.status_code == 409, (changed, refused.text)
    assert await web_rig.db.run(list_jobs) == []
    created = await client.post("/api/v1/jobs", json={**draft, "plan_digest": digest})
    assert created.status_code == 201, created.text


async def test_the_job_page_shows_an_unreachable_rows_next_try_and_no_start_before_a_send(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    (host_id,) = await registered(web_rig, client, fleet)
    fleet.apply_faults(fleet.agents[0].address, {"down": True})
    created = await client.post("/api/v1/jobs", json={"host_ids": [host_id], "schedule": "now"})
    job_id = created.json()["job_id"]
    jobs = web_rig.system.scheduler.jobs
    assert jobs is not None
    with trio.fail_after(30):
        while not (row := (await web_rig.db.run(job_rows, job_id))[0]).error_message:
            await jobs.wait_pass()
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    note = re.search(rf'data-row-note="{row.id}">(.*?)</span>', page, re.S)
    assert note is not None and note[1].startswith("agent unreachable ("), page[-3000:]
    assert "next try" in note[1] and "gives up ~" in note[1]
    timing = re.search(rf'data-row-timing="{row.id}">(.*?)</td>', page, re.S)
    assert timing is not None and "claimed <time" in timing[1]
    assert "started <time" not in timing[1]  # nothing was sent
