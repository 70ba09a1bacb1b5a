"""Jobs, windows, blackouts and the calendar through the JSON API and the pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2
import pytest
import trio

from simulator import Fleet
from storage import get_job, window_changes

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(90)


async def registered(web_rig: WebRig, client: httpx2.AsyncClient, fleet: Fleet) -> list[int]:
    ids = []
    for agent in fleet.agents:
        response = await client.post(
            "/api/v1/hosts", json={"name": agent.address, "groups": ["web"]}
        )
        ids.append(response.json()["id"])
    pending = {i: len(a.profile.upgradable) for i, a in zip(ids, fleet.agents, strict=True)}
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda s: (
                len(s) == len(ids)
                and all(
                    x.health.value == "healthy"
                    and x.phase.value == "idle"
                    and x.pending_patches == pending[x.host_id]
                    for x in s
                )
            )
        )
    await web_rig.system.sink.flush()
    return ids


async def test_job_validation_errors_name_the_fields(client: httpx2.AsyncClient) -> None:
    error = assert_envelope(
        await client.post(
            "/api/v1/jobs", json={"kind": "explode", "schedule": "later", "batch_percent": 300}
        ),
        422,
    )
    assert {"kind", "schedule", "batch_percent", "hosts"} <= set(error["details"]["fields"])
    error = assert_envelope(
        await client.post("/api/v1/jobs", json={"kind": "remove", "group": "web"}), 422
    )
    assert "packages" in error["details"]["fields"]
    assert_envelope(await client.post("/api/v1/jobs", json={"group": "nobody-here"}), 422)


async def test_deploy_by_group_preview_and_finish(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(3)
    await registered(web_rig, client, fleet)
    preview = (await client.post("/api/v1/deploy/preview", json={"group": "web"})).json()
    assert preview["hosts"] == 3 and preview["all_hosts"] is True
    expected = set().union(*(a.profile.upgradable for a in fleet.agents))
    assert {p["name"] for p in preview["patches"]} == expected
    created = await client.post(
        "/api/v1/jobs",
        json={"group": "web", "schedule": "now", "selection": "all", "all_hosts": True},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    with trio.fail_after(60):
        while (await web_rig.db.run(get_job, job_id)).status in ("queued", "running"):
            await web_rig.system.scheduler.jobs.wait_pass()  # type: ignore[union-attr]
    detail = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert detail["status"] == "succeeded"
    assert [r["state"] for r in detail["rows"]] == ["succeeded"] * 3
    listing = (await client.get("/api/v1/jobs?status=succeeded")).json()["jobs"]
    assert listing[0]["id"] == job_id and listing[0]["hosts"] == {"succeeded": 3}
    page = await client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "succeeded" in page.text
    assert (await client.get("/jobs")).status_code == 200
    assert (await client.get("/deploy?group=web")).status_code == 200


async def test_windows_crud_preview_calendar_and_recorded_changes(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    group = (await client.post("/api/v1/groups", json={"name": "db"})).json()
    bad = assert_envelope(
        await client.post(
            "/api/v1/windows",
            json={
                "group_id": group["id"],
                "recurrence": "weekly",
                "start_date": "2026-12-01",
                "start_time": "02:00",
                "duration_minutes": 60,
                "timezone": "Mars/Base",
            },
        ),
        422,
    )
    assert set(bad["details"]["fields"]) == {"timezone", "weekdays"}
    today = dt.date.today().isoformat()
    window = {
        "group_id": group["id"],
        "recurrence": "daily",
        "start_date": today,
        "start_time": "03:00",
        "duration_minutes": 90,
        "timezone": "Europe/Berlin",
    }
    preview = (await client.post("/api/v1/windows/preview", json=window)).json()
    assert len(preview["occurrences"]) == 8
    created = await client.post("/api/v1/windows", json=window)
    assert created.status_code == 201
    window_id = created.json()["id"]
    updated = await client.put(
        f"/api/v1/windows/{window_id}", json={**window, "duration_minutes": 30}
    )
    assert updated.status_code == 200
    calendar = (await client.get("/api/v1/calendar?days=10")).json()["entries"]
    assert 9 <= len(calendar) <= 11
    assert all(e["target"] == "group db" for e in calendar)
    assert (await client.get("/windows")).status_code == 200
    blackout = await client.post(
        "/api/v1/blackouts",
        json={
            "name": "freeze",
            "starts_at": "2026-12-20T00:00:00+00:00",
            "ends_at": "2027-01-03T00:00:00+00:00",
        },
    )
    assert blackout.status_code == 201
    assert_envelope(
        await client.post(
            "/api/v1/blackouts",
            json={"starts_at": "2027-01-03T00:00:00+00:00", "ends_at": "2026-12-20T00:00:00+00:00"},
        ),
        422,
    )
    assert (await client.delete(f"/api/v1/windows/{window_id}")).status_code == 204
    changes = await web_rig.db.run(window_changes, window_id)
    assert [c[0] for c in changes] == ["created", "updated", "deleted"]


async def test_window_form_re_renders_with_messages(client: httpx2.AsyncClient) -> None:
    token = form_token((await client.get("/windows")).text)
    response = await client.post(
        "/windows",
        data={
            "csrf_token": token,
            "recurrence": "weekly",
            "start_date": "not a date",
            "timezone": "UTC",
        },
    )
    assert response.status_code == 422
    assert "a date such as" in response.text
    assert "choose either a host or a group" in response.text
