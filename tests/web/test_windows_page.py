"""The windows page (issue 16 point 6): rules in words, edit and disable, and a month calendar
grid with windows and blackouts, per group or host."""

from __future__ import annotations

import html
import re

import httpx2
import pytest

from .conftest import form_token
from .test_form_errors import shown_errors

pytestmark = pytest.mark.timeout(60)

BERLIN = {
    "recurrence": "weekly",
    "weekdays": [1, 3],
    "start_time": "22:00",
    "duration_minutes": 240,
    "timezone": "Europe/Berlin",
    "start_date": "2026-01-01",
}


async def make(client: httpx2.AsyncClient, path: str, body: dict[str, object]) -> int:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def cell(page: str, date: str) -> str:
    """The calendar cell of ``date`` (its HTML)."""
    match = re.search(rf'<td class="([^"]*)" data-date="{date}">(.*?)</td>', page, re.S)
    assert match is not None, date
    return match[1] + " " + html.unescape(match[2])


async def test_windows_list_says_weekdays_by_name_and_last_sunday_in_words(
    client: httpx2.AsyncClient,
) -> None:
    group = await make(client, "/api/v1/groups", {"name": "db"})
    await make(client, "/api/v1/windows", {**BERLIN, "group_id": group})
    await make(
        client,
        "/api/v1/windows",
        {"group_id": group, "recurrence": "monthly_nth", "nth": -1, "weekdays": [6]},
    )
    page = html.unescape((await client.get("/windows")).text)
    assert "every Tue and Thu 22:00\u201302:00 Europe/Berlin" in page
    assert "the last Sunday of every month 02:00\u201304:00 UTC" in page
    assert "days 1,3" not in page


async def test_window_edit_form_is_prefilled_and_saving_replaces_the_window(
    client: httpx2.AsyncClient,
) -> None:
    group = await make(client, "/api/v1/groups", {"name": "db"})
    window = await make(client, "/api/v1/windows", {**BERLIN, "group_id": group})
    page = (await client.get(f"/windows?edit={window}")).text
    assert f'action="/windows/{window}"' in page
    assert 'value="Europe/Berlin"' in page
    assert re.search(r'value="1" checked', page) and re.search(r'value="3" checked', page)
    saved = await client.post(
        f"/windows/{window}",
        data={
            "target": f"group:{group}",
            "recurrence": "daily",
            "start_date": "2026-01-01",
            "start_time": "03:30",
            "duration_minutes": "60",
            "timezone": "UTC",
            "enabled": "on",
            "csrf_token": form_token(page),
        },
    )
    assert saved.status_code == 303, shown_errors(saved.text)
    (stored,) = (await client.get("/api/v1/windows")).json()["windows"]
    assert (stored["id"], stored["recurrence"], stored["start_time"]) == (
        window,
        "daily",
        "03:30:00",
    )
    bad = await client.post(
        f"/windows/{window}",
        data={"target": f"group:{group}", "recurrence": "daily", "start_time": "3h",
              "csrf_token": form_token(page)},
    )  # fmt: skip
    assert bad.status_code == 422
    assert shown_errors(bad.text) == {"start_time": "a time such as 02:00"}
    assert f'action="/windows/{window}"' in bad.text  # still editing that window


async def test_disabled_window_is_marked_and_leaves_the_calendar_until_enabled(
    client: httpx2.AsyncClient,
) -> None:
    group = await make(client, "/api/v1/groups", {"name": "db"})
    window = await make(
        client, "/api/v1/windows", {"group_id": group, "recurrence": "daily", "name": "nightly"}
    )
    page = (await client.get("/windows?month=2030-06")).text
    assert "nightly" in cell(page, "2030-06-12")
    token = form_token(page)
    assert (
        await client.post(f"/windows/{window}/disable", data={"csrf_token": token})
    ).status_code == 303
    assert (await client.get("/api/v1/windows")).json()["windows"][0]["enabled"] is False
    page = (await client.get("/windows?month=2030-06")).text
    assert "disabled</span>" in page
    assert "nightly" not in cell(page, "2030-06-12")
    assert (
        await client.post(f"/windows/{window}/enable", data={"csrf_token": token})
    ).status_code == 303
    assert "nightly" in cell((await client.get("/windows?month=2030-06")).text, "2030-06-12")
    gone = await client.post("/windows/987654321/disable", data={"csrf_token": token})
    assert gone.status_code == 303  # back to the list with "already deleted"


async def test_month_grid_shows_blackouts_and_windows_per_group_or_host(
    client: httpx2.AsyncClient,
) -> None:
    db = await make(client, "/api/v1/groups", {"name": "db"})
    web = await make(client, "/api/v1/groups", {"name": "web"})
    host = await client.post("/api/v1/hosts", json={"name": "127.80.0.2", "groups": ["web"]})
    host_id = host.json()["id"]
    await make(client, "/api/v1/windows", {"group_id": db, "recurrence": "daily", "name": "dbw"})
    await make(
        client,
        "/api/v1/windows",
        {"group_id": web, "recurrence": "weekly", "weekdays": [0], "name": "webw"},
    )
    await make(
        client,
        "/api/v1/blackouts",
        {"name": "xmas", "starts_at": "2030-12-24T00:00:00", "ends_at": "2030-12-27T00:00:00"},
    )
    page = (await client.get("/windows?month=2030-12")).text
    assert "December 2030" in page
    assert "blacked-out" in cell(page, "2030-12-25") and "blackout xmas" in cell(page, "2030-12-25")
    assert "dbw" not in cell(page, "2030-12-25")  # cut out by the blackout
    assert "dbw" in cell(page, "2030-12-02") and "webw" in cell(page, "2030-12-02")  # a Monday
    assert "other-month" in cell(page, "2030-11-25")  # the grid starts on a Monday
    only_web = (await client.get(f"/windows?month=2030-12&target=group:{web}")).text
    assert "dbw" not in cell(only_web, "2030-12-02") and "webw" in cell(only_web, "2030-12-02")
    for_host = (await client.get(f"/windows?month=2030-12&target=host:{host_id}")).text
    assert "dbw" not in cell(for_host, "2030-12-02") and "webw" in cell(for_host, "2030-12-02")
    wrong = (await client.get("/windows?month=2030-13&target=group:987654321")).text
    assert shown_errors(wrong) == {
        "month": "a month between 1900-01 and 9998-12",
        "cal_target": "no group with id 987654321",
    }
