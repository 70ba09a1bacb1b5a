"""The pages validate with the API's models: the same input gives the same message beside the
field as in the API's 422, and a rule (blackout time zones) is the same on both sides."""

from __future__ import annotations

import datetime as dt
import html

import httpx2
import pytest

from storage import list_blackouts

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(60)


async def test_host_form_and_api_give_the_same_port_and_group_messages(
    client: httpx2.AsyncClient,
) -> None:
    api = assert_envelope(
        await client.post(
            "/api/v1/hosts", json={"name": "db1.example.test", "port": 99999, "groups": ["b d"]}
        ),
        422,
    )
    token = form_token((await client.get("/hosts")).text)
    page = await client.post(
        "/hosts/add",
        data={"name": "db1.example.test", "port": "99999", "groups": "b d", "csrf_token": token},
    )
    assert page.status_code == 422
    shown = html.unescape(page.text)
    assert api["details"]["fields"]["port"] == "must be between 1 and 65535"
    for field in ("port", "groups"):
        assert api["details"]["fields"][field] in shown, field


async def test_window_form_and_api_give_the_same_time_zone_message(
    client: httpx2.AsyncClient,
) -> None:
    group = (await client.post("/api/v1/groups", json={"name": "db"})).json()
    api = assert_envelope(
        await client.post(
            "/api/v1/windows",
            json={"group_id": group["id"], "recurrence": "daily", "timezone": "Mars/Olympus"},
        ),
        422,
    )
    message = api["details"]["fields"]["timezone"]
    token = form_token((await client.get("/windows")).text)
    page = await client.post(
        "/windows",
        data={
            "target": f"group:{group['id']}",
            "recurrence": "daily",
            "timezone": "Mars/Olympus",
            "duration_minutes": "60",
            "csrf_token": token,
        },
    )
    assert page.status_code == 422
    assert message in html.unescape(page.text)
    saved = await client.post(
        "/windows",
        data={
            "name": "nightly",
            "target": f"group:{group['id']}",
            "recurrence": "monthly_nth",
            "start_date": "2026-12-01",
            "start_time": "02:00:00",
            "duration_minutes": "60",
            "timezone": "Europe/Berlin",
            "weekdays": "5",
            "day_of_month": "1",
            "short_month": "clamp",
            "nth": "-1",
            "auto_apply": "none",
            "enabled": "on",
            "csrf_token": token,
        },
    )
    assert saved.status_code == 303, html.unescape(saved.text)[-3000:]
    (window,) = (await client.get("/api/v1/windows")).json()["windows"]
    assert (window["name"], window["nth"], window["weekdays"]) == ("nightly", -1, [5])


async def test_blackout_times_without_a_zone_are_utc_on_the_page_and_in_the_api(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = form_token((await client.get("/windows")).text)
    page = await client.post(
        "/blackouts",
        data={
            "name": "page",
            "starts_at": "2027-01-02T03:00",
            "ends_at": "2027-01-02T05:00",
            "csrf_token": token,
        },
    )
    assert page.status_code == 303
    api = await client.post(
        "/api/v1/blackouts",
        json={"name": "api", "starts_at": "2027-01-02T03:00", "ends_at": "2027-01-02T05:00"},
    )
    assert api.status_code == 201, api.text
    zoned = await client.post(
        "/api/v1/blackouts",
        json={
            "name": "zoned",
            "starts_at": "2027-01-02T03:00+01:00",
            "ends_at": "2027-01-02T05:00+01:00",
        },
    )
    assert zoned.status_code == 201, zoned.text
    starts = {b.name: b.starts_at for b in await web_rig.db.run(list_blackouts)}
    utc = dt.datetime(2027, 1, 2, 3, tzinfo=dt.UTC)
    assert starts == {"page": utc, "api": utc, "zoned": utc - dt.timedelta(hours=1)}
    backwards = assert_envelope(
        await client.post(
            "/api/v1/blackouts",
            json={"starts_at": "2027-01-02T05:00", "ends_at": "2027-01-02T03:00"},
        ),
        422,
    )
    assert set(backwards["details"]["fields"]) == {"ends_at"}
