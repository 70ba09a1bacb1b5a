"""Review findings on the deployment plan, its forms, rollback and windows (issue 16, review
F16b), plus the keep-alive hang after an early answer to a large body."""

from __future__ import annotations

import datetime as dt
import html
import re
from functools import partial
from typing import Any

import httpx2
import pytest
import trio

from simulator import Fleet
from simulator.catalog import requires_reboot
from storage import create_user, insert_host, job_rows, list_jobs, set_paused
from web import WebListener, serve_web

from ..conftest import Pki
from .conftest import WebRig, form_token, login
from .test_form_errors import shown_errors
from .test_jobs_api import registered
from .test_plan import finished
from .test_relay import browser_context
from .test_windows_page import cell

pytestmark = pytest.mark.timeout(120)


async def test_a_keep_alive_connection_answers_again_after_a_large_body_was_refused_unread(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path)
    urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    async with httpx2.AsyncClient(
        verify=browser_context(pki),
        base_url=urls[0],
        limits=httpx2.Limits(max_connections=1),
        timeout=10,
    ) as http:
        csrf = await login(http, web_rig.password)
        body = b'{"packages":["' + b"0" * 200_000 + b'"]}'
        early = [
            ({"authorization": "Bearer junk", "content-type": "application/json"}, 401),
            ({"x-csrf-token": csrf, "content-type": "text/plain"}, 415),
        ]
        for headers, status in early:
            refused = await http.post("/api/v1/jobs/plan", content=body, headers=headers)
            assert refused.status_code == status, refused.text
            # The middleware reads and discards the body within the limit (e486003): the
            # same connection may serve the next request, or be closed; either way it answers.
            with trio.fail_after(8):
                again = await http.get("/api/v1/hosts")
            assert again.status_code == 200
    stop.set()


async def test_a_patch_job_naming_a_package_with_a_version_applies_that_package(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    [host_id] = await registered(web_rig, client, fleet)
    agent = fleet.agents[0]
    name = sorted(agent.profile.upgradable)[0]
    target = agent.profile.upgradable[name]
    draft = {
        "host_ids": [host_id],
        "schedule": "now",
        "selection": "list",
        "packages": [{"name": name, "version": target}],
    }
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    assert [c["name"] for c in plan["hosts"][0]["changes"]] == [name]
    created = await client.post("/api/v1/jobs", json=draft)
    assert created.status_code == 201, created.text
    await finished(web_rig, created.json()["job_id"])
    [row] = await web_rig.db.run(job_rows, created.json()["job_id"])
    assert row.state == "succeeded", (row.error_code, row.error_message)
    assert (row.packages_after or {}).get(name) == target


async def test_show_the_plan_names_every_invalid_field_with_or_without_hosts(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    token = form_token((await client.get("/deploy", params={"host_ids": str(row.id)})).text)
    options = {"csrf_token": token, "batch_percent": "0", "reboot_delay_s": "-1"}
    wrong = {
        "batch_percent": "must be between 1 and 100",
        "reboot_delay_s": "must be between 0 and 86400",
    }
    expected = {
        "": {"hosts": "choose hosts: a list, a group or a filter", **wrong},
        "abc": {"host_ids": "item 1: must be a whole number", **wrong},
        str(row.id): wrong,
    }
    for hosts, errors in expected.items():
        for action in ("plan", "deploy"):
            shown = await client.post(
                "/deploy", data={**options, "host_ids": hosts, "action": action}
            )
            assert shown.status_code == 422, (hosts, action)
            assert shown_errors(shown.text) == errors, (hosts, action)


async def test_a_month_far_in_the_past_or_future_is_a_month_error_not_a_500(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    [group] = (await client.get("/api/v1/groups")).json()["groups"]
    window = {"name": "nightly", "recurrence": "daily", "start_time": "03:00"}
    made = await client.post("/api/v1/windows", json={**window, "group_id": group["id"]})
    assert made.status_code == 201, made.text
    for month in ("0001-01", "0001-02", "1899-12", "9999-01"):
        page = await client.get("/windows", params={"month": month})
        assert page.status_code == 200, month
        assert shown_errors(page.text) == {"month": "a month between 1900-01 and 9998-12"}, month
    page = await client.get("/windows", params={"month": "1900-01"})
    assert (page.status_code, shown_errors(page.text)) == (200, {})
    assert 'href="/windows?month=1900-01' in page.text  # the previous month stays in range


async def test_a_later_batch_is_planned_in_a_window_not_before_the_previous_batch_starts(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = []
    for n in range(2):
        row = await web_rig.db.run(
            lambda conn, n=n: insert_host(
                conn, name=f"h{n}.example.test", address=f"127.0.0.{n + 1}", groups=["g"]
            )
        )
        ids.append(row.id)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date().isoformat()
    first = {"name": "once", "recurrence": "once", "start_date": later, "start_time": "03:00"}
    daily = {"name": "daily", "recurrence": "daily", "start_time": "03:00"}
    for host_id, window in zip(ids, (first, daily), strict=True):
        made = await client.post("/api/v1/windows", json={**window, "host_id": host_id})
        assert made.status_code == 201, made.text
    draft = {"host_ids": ids, "schedule": "window", "batch_size": 1}
    plan = (await client.post("/api/v1/jobs/plan", json=draft)).json()
    by_host = {h["host_id"]: h for h in plan["hosts"]}
    assert [by_host[i]["batch"] for i in ids] == [0, 1]
    opens = dt.datetime.fromisoformat(by_host[ids[0]]["window_start"])
    assert opens.date().isoformat() == later
    assert dt.datetime.fromisoformat(by_host[ids[1]]["window_start"]) >= opens
    starts = [dt.datetime.fromisoformat(b["starts"]) for b in plan["batches"]]
    assert starts[1] >= starts[0]


async def test_the_plan_predicts_a_reboot_of_a_host_already_waiting_for_one(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    agent = fleet.agents[0]
    agent.pending_reboot = True
    [host_id] = await registered(web_rig, client, fleet)
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(lambda s: all(x.pending_reboot for x in s))
    await web_rig.system.sink.flush()
    quiet = [n for n in sorted(agent.profile.upgradable) if not requires_reboot(n)][:1]
    assert quiet
    draft = {"host_ids": [host_id], "schedule": "now", "selection": "list", "packages": quiet}
    for allow, expected in ((True, "reboots"), (False, "needs a reboot (not allowed")):
        plan = (
            await client.post("/api/v1/jobs/plan", json={**draft, "allow_reboot": allow})
        ).json()
        assert plan["hosts"][0]["reboot"].startswith(expected), allow


async def test_deploy_refuses_with_409_when_the_plan_changed_since_it_was_shown(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    query = {"host_ids": str(row.id), "schedule": "now", "selection": "all"}
    page = await client.get("/deploy", params=query)
    digest = re.search(r'name="plan_digest" form="deploy-form" value="([0-9a-f]+)"', page.text)
    assert digest
    form = {**query, "csrf_token": form_token(page.text), "action": "deploy"}
    await web_rig.db.run(set_paused, row.id, True)  # the plan now skips the host
    refused = await client.post("/deploy", data={**form, "plan_digest": digest[1]})
    assert refused.status_code == 409
    assert "the plan changed since you saw it" in html.unescape(refused.text)
    assert await web_rig.db.run(list_jobs) == []
    fresh = re.search(r'name="plan_digest" form="deploy-form" value="([0-9a-f]+)"', refused.text)
    assert fresh and fresh[1] != digest[1]
    created = await client.post("/deploy", data={**form, "plan_digest": fresh[1]})
    assert created.status_code == 303, shown_errors(created.text)


async def test_the_window_editor_keeps_the_seconds_of_a_start_time(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    [group] = (await client.get("/api/v1/groups")).json()["groups"]
    window = {"name": "w", "recurrence": "daily", "start_time": "03:00:30"}
    made = await client.post("/api/v1/windows", json={**window, "group_id": group["id"]})
    assert made.status_code == 201, made.text
    page = await client.get("/windows", params={"edit": str(made.json()["id"])})
    assert 'name="start_time" type="time" step="1" value="03:00:30"' in page.text


async def test_more_than_a_thousand_ticked_patches_is_a_packages_error_not_a_bare_400(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    token = form_token((await client.get("/deploy", params={"host_ids": str(row.id)})).text)
    many = {"csrf_token": token, "host_ids": str(row.id), "action": "plan"}
    shown = await client.post("/deploy", data={**many, "patch": [f"p{i}" for i in range(1200)]})
    assert shown.status_code == 422
    assert "at most 1000" in shown_errors(shown.text)["packages"]


async def test_a_host_calendar_shows_the_windows_of_its_groups_outside_the_users_scope(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host = await web_rig.db.run(
        lambda c: insert_host(c, name="ab.example.test", address="127.0.0.3", groups=["ga", "gb"])
    )
    gid = {g["name"]: g["id"] for g in (await client.get("/api/v1/groups")).json()["groups"]}
    made = await client.post(
        "/api/v1/windows",
        json={
            "name": "secret-gb",
            "group_id": gid["gb"],
            "recurrence": "daily",
            "start_time": "03:00",
        },
    )
    assert made.status_code == 201, made.text
    password = "Operator-pass-123456"
    hashed = await web_rig.auth.hash_password(password)
    await web_rig.db.run(lambda c: create_user(c, "op", hashed, "operator", group_ids=(gid["ga"],)))
    transport = httpx2.ASGITransport(app=web_rig.app, client=("127.0.0.8", 4711))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as op:
        await login(op, password, "op")
        page = await op.get("/windows", params={"target": f"host:{host.id}", "month": "2030-12"})
    assert page.status_code == 200
    assert "window of another group" in cell(page.text, "2030-12-02")
    assert "secret-gb" not in page.text


async def test_a_paused_host_of_an_in_window_job_is_not_skipped_at_creation(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await web_rig.db.run(
        lambda conn: insert_host(conn, name="h0.example.test", address="127.0.0.1", groups=["g"])
    )
    window = {"name": "daily", "recurrence": "daily", "start_time": "03:00", "host_id": row.id}
    assert (await client.post("/api/v1/windows", json=window)).status_code == 201
    await web_rig.db.run(set_paused, row.id, True)
    draft = {"host_ids": [row.id], "schedule": "window"}
    [planned] = (await client.post("/api/v1/jobs/plan", json=draft)).json()["hosts"]
    assert planned["skip"] == ""
    assert planned["reason"].startswith("paused now")
    created = await client.post("/api/v1/jobs", json=draft)
    assert created.status_code == 201, created.text
    [job_row] = await web_rig.db.run(job_rows, created.json()["job_id"])
    assert job_row.state != "skipped"
