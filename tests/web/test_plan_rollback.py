"""Rollback honesty (issue 16 point 5): a rollback that needs an older version is offered only
on hosts whose package manager can install one (apt agents pass no --allow-downgrades); the
button says why otherwise; a failed rollback shows the agent's error and its stderr."""

from __future__ import annotations

import html
from typing import Any

import httpx2
import pytest

from simulator import Fleet
from storage import job_rows

from .conftest import WebRig, assert_envelope, form_token
from .test_jobs_api import registered
from .test_plan import finished

pytestmark = pytest.mark.timeout(180)

APT = "apt hosts cannot go back to an older version"


async def test_rollback_is_offered_only_where_the_package_manager_can_downgrade(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(6)  # debian, debian, ubuntu, ubuntu, rocky, alpine
    ids = await registered(web_rig, client, fleet)
    family = {i: a.profile.distro_id for i, a in zip(ids, fleet.agents, strict=True)}
    apt = [i for i in ids if family[i] in ("debian", "ubuntu")]
    able = [i for i in ids if family[i] == "rocky"]  # dnf; apk's repository has no older one
    assert len(apt) == 4 and len(able) == 1, family
    created = await client.post(
        "/api/v1/jobs", json={"group": "web", "all_hosts": True, "schedule": "now"}
    )
    job_id = created.json()["job_id"]
    await finished(web_rig, job_id)
    rows = await web_rig.db.run(job_rows, job_id)
    assert all(r.state == "succeeded" and r.packages_before != r.packages_after for r in rows)

    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    for host_id in apt:
        assert f'aria-describedby="rb-why-{host_id}">Roll back host</button>' in page
        assert f'<span class="muted small" id="rb-why-{host_id}">{APT}' in page
        assert f'name="host_id" value="{host_id}"' not in page
    for host_id in able:
        assert f'name="host_id" value="{host_id}"' in page

    refused = assert_envelope(
        await client.post(f"/api/v1/jobs/{job_id}/rollback", json={"host_ids": [apt[0]]}), 422
    )
    assert refused["details"]["fields"]["host_id"].startswith(APT)
    token = form_token(page)
    back = await client.post(
        f"/jobs/{job_id}/rollback", data={"host_id": str(apt[1]), "csrf_token": token}
    )
    assert back.status_code == 303 and "apt+hosts+cannot" in back.headers["location"]

    # The dnf host's package tool fails this time: the failure is shown in full.
    rocky = fleet.agents[ids.index(able[0])]
    rocky.faults.job_failures = ["PKG_MANAGER_ERROR"] * 4
    whole = await client.post(f"/api/v1/jobs/{job_id}/rollback", json={})
    assert whole.status_code == 201, whole.text
    rollback_id = whole.json()["job_id"]
    assert sorted(r.host_id for r in await web_rig.db.run(job_rows, rollback_id)) == able

    await finished(web_rig, rollback_id)
    failed = [r for r in await web_rig.db.run(job_rows, rollback_id) if r.state == "failed"]
    assert failed
    shown = (await client.get(f"/jobs/{rollback_id}")).text
    for row in failed:
        assert row.error_stderr.strip()
        assert html.escape(row.error_stderr.strip()) in shown
        assert html.escape(row.error_message[:60]) in shown
