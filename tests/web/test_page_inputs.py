"""The pages answer bad input with a page (4xx or a redirect with a notice), never a 500: the
same limits as the API (NUL characters, ids beyond bigint, malformed numbers and lists)."""

from __future__ import annotations

import re

import httpx2
import pytest

from .conftest import form_token

pytestmark = pytest.mark.timeout(60)

HUGE = str(2**64)
NASTY = ("\x00", HUGE, "-1", "abc", "1,,x", "%_\\", "\U0001d518" * 300)

FORMS = {
    "/hosts/add": ("name", "display_name", "groups", "port"),
    "/hosts/bulk": ("action", "host_id", "group_id"),
    "/groups": ("name", "description"),
    "/groups/1/rename": ("name",),
    "/discovery": ("cidr",),
    "/deploy": (
        "kind", "schedule", "selection", "packages", "host_ids", "group", "filter",
        "reboot_delay_s", "batch_size", "batch_percent", "failure_threshold",
    ),
    "/windows": (
        "name", "target", "recurrence", "start_date", "start_time", "duration_minutes",
        "timezone", "weekdays", "day_of_month", "short_month", "nth", "until", "auto_apply",
    ),
    "/blackouts": ("name", "starts_at", "ends_at"),
    f"/jobs/{HUGE}/rollback": ("host_id",),
    "/jobs/1/rollback": ("host_id",),
}  # fmt: skip

PAGES = (
    "/hosts?health=sick&limit=0&page=x&min_pending=-5&sort=nope&q=%00",
    "/hosts?q=%25_%5C&os=%00",
    "/hosts/1?q=%00",
    f"/hosts/{HUGE}",
    f"/jobs/{HUGE}",
    "/jobs?status=%00",
    "/deploy?host_ids=abc,1",
    f"/deploy?host_ids={HUGE}",
    "/deploy?filter=%00",
    "/deploy?group=%25",
    f"/discovery/{HUGE}",
)


async def test_every_page_form_survives_nasty_values(client: httpx2.AsyncClient) -> None:
    token = form_token((await client.get("/hosts")).text)
    for path, fields in FORMS.items():
        for value in NASTY:
            data = {name: value for name in fields} | {"csrf_token": token}
            response = await client.post(path, data=data)
            assert response.status_code < 500, (path, value, response.text[-2000:])


async def test_every_page_survives_nasty_query_strings(client: httpx2.AsyncClient) -> None:
    for path in PAGES:
        response = await client.get(path)
        assert response.status_code < 500, (path, response.text[-2000:])


async def test_login_with_nul_or_overlong_user_name_is_a_wrong_login_not_a_500(
    anonymous: httpx2.AsyncClient,
) -> None:
    for username in ("ad\x00min", "a" * 10_000):
        page = await anonymous.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        response = await anonymous.post(
            "/login", data={"username": username, "password": "x\x00", "login_token": token[1]}
        )
        assert response.status_code == 401, response.text[-2000:]
        assert "Wrong user name or password" in response.text
