"""web.forms.in_zone: a page's local date-time that does not exist in the user's zone (spring
forward gap) or exists twice (fall back) is refused with a one-line field error instead of being
silently shifted (review rvA, point 6). Decision: ambiguous times are refused too, since the page
cannot say which of the two instants is meant."""

from __future__ import annotations

import datetime as dt

import httpx2
import pytest

from web.forms import in_zone
from web.handle import InvalidInput

from .conftest import WebRig, form_token
from .test_zone_pages import use_zone


def test_in_zone_refuses_a_local_time_inside_the_spring_forward_gap() -> None:
    with pytest.raises(InvalidInput) as caught:
        in_zone({"starts_at": "2027-03-28T02:30"}, ("starts_at",), "Europe/Berlin")
    message = caught.value.fields["starts_at"]
    assert "does not exist in Europe/Berlin" in message
    assert "\n" not in message


def test_in_zone_refuses_a_local_time_that_happens_twice_when_the_clocks_go_back() -> None:
    with pytest.raises(InvalidInput) as caught:
        in_zone({"until": "2026-10-25T02:30"}, ("until",), "Europe/Berlin")
    assert "happens twice in Europe/Berlin" in caught.value.fields["until"]


def test_in_zone_reads_an_ordinary_local_time_in_the_zone() -> None:
    out = in_zone({"starts_at": "2027-03-28T03:30"}, ("starts_at",), "Europe/Berlin")
    at = dt.datetime.fromisoformat(out["starts_at"])
    assert at.astimezone(dt.UTC) == dt.datetime(2027, 3, 28, 1, 30, tzinfo=dt.UTC)


async def test_a_blackout_starting_in_the_dst_gap_is_refused_beside_its_field(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await use_zone(client, "Europe/Berlin")
    page = await client.get("/windows")
    response = await client.post(
        "/blackouts",
        data={"csrf_token": form_token(page.text), "name": "freeze",
              "starts_at": "2027-03-28T02:30", "ends_at": "2027-03-28T05:00"},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert "does not exist in Europe/Berlin" in response.text


async def test_the_audit_filter_with_a_time_in_the_dst_gap_is_a_field_error_not_a_500(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await use_zone(client, "Europe/Berlin")
    response = await client.get("/audit", params={"since": "2027-03-28T02:30"})
    assert response.status_code in (200, 422), response.text
    assert "does not exist in Europe/Berlin" in response.text
