"""Freshness and "why" on the host pages (issue 16 point 1): never-contacted hosts are unknown
(never an all-clear), a failing host says since when and its retries, and it turns back by
itself; the view function's stale rule and time display."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import httpx2
import trio

from simulator.fleet import Fleet
from web.freshness import format_time, host_view, time_tag

from .conftest import WebRig

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def cell(page: str, label: str) -> str:
    match = re.search(rf"<dt>{label}</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    assert match is not None, label
    return html.unescape(match[1]).strip()


async def test_a_never_contacted_host_is_unknown_never_nothing_pending_or_no_reboot(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    created = await client.post("/api/v1/hosts", json={"name": "127.70.200.9"})  # no agent
    assert created.status_code == 201, created.text
    host_id = created.json()["id"]
    with trio.fail_after(10):  # its first poll has failed (connection refused)
        await web_rig.system.fleet.wait_until(
            lambda snaps: any(s.host_id == host_id and s.failing_since for s in snaps)
        )
    page = (await client.get(f"/hosts/{host_id}")).text
    assert f'data-host-condition="{host_id}">unknown<' in page
    assert "never contacted" in page and "poll failing since" in page
    assert (
        "Nothing pending" not in page
        and "No current patch data: this host's patches have never" in html.unescape(page)
    )
    assert cell(page, "Pending reboot") == "unknown (no data yet)"
    listing = (await client.get("/hosts")).text
    assert f'data-host-condition="{host_id}">unknown<' in listing
    assert ">0</span></td>" not in listing  # no pending count of 0 for a host never seen
    dashboard = (await client.get("/")).text
    assert re.search(r'data-count="pending">1<', dashboard)  # counted unknown, never healthy
    assert re.search(r'data-count="healthy">0<', dashboard)
    badge = re.search(r'<span id="live-status"[^>]*>([^<]*)<', dashboard)
    assert badge is not None and badge[1] == "connecting…"  # never a red "offline" on load


async def test_a_host_going_down_shows_failing_with_its_retries_and_comes_back_by_itself(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    agent = fleet.agents[0]
    host_id = (await client.post("/api/v1/hosts", json={"name": agent.address})).json()["id"]
    fleet_state = web_rig.system.fleet
    with trio.fail_after(30):
        await fleet_state.wait_until(lambda snaps: any(s.condition == "healthy" for s in snaps))
    fleet.apply_faults(agent.address, {"down": True})
    assert (await client.post("/api/v1/hosts/refresh", json={"host_ids": [host_id]})).is_success
    with trio.fail_after(30):
        await fleet_state.wait_until(lambda snaps: any(s.condition == "failing" for s in snaps))
    page = (await client.get(f"/hosts/{host_id}")).text
    assert f'data-host-condition="{host_id}">failing<' in page
    # its times are <time> elements in the user's zone, UTC on hover
    clock = r'<time datetime="[^"]+" title="[^"]+ UTC">\d\d:\d\d</time>'
    assert re.search(rf"poll failing since {clock} \(\d of 3 retries, next {clock}\)", page)
    fleet.apply_faults(agent.address, {"down": False})
    with trio.fail_after(30):  # the ladder's next retry (1 s here) finds it again: no Refresh
        await fleet_state.wait_until(
            lambda snaps: any(s.condition == "healthy" and not s.failing_since for s in snaps)
        )
    page = (await client.get(f"/hosts/{host_id}")).text
    assert f'data-host-condition="{host_id}">healthy<' in page
    assert "poll failing" not in page


def live(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "condition": "healthy",
        "health_as_of": (NOW - dt.timedelta(minutes=4)).isoformat(),
        "patches_as_of": (NOW - dt.timedelta(minutes=20)).isoformat(),
        "stale_after": (NOW + dt.timedelta(minutes=6)).isoformat(),
        "retries_total": 3,
    }
    return {**base, **fields}


def test_host_view_says_the_data_age_of_health_and_patches() -> None:
    view = host_view(live(), now=NOW)
    assert view.condition == "healthy" and view.why == ""
    assert view.ages == "health as of 4 min ago · patches as of 20 min ago"


def test_host_view_turns_healthy_into_stale_once_stale_after_has_passed() -> None:
    view = host_view(live(stale_after=(NOW - dt.timedelta(seconds=1)).isoformat()), now=NOW)
    assert view.condition == "stale"
    assert view.why == "no successful poll since 11:56"


def test_host_view_failing_line_names_since_retries_and_next_attempt_in_the_users_zone() -> None:
    view = host_view(
        live(
            condition="failing",
            failing_since="2026-11-30T11:03:00+00:00",
            retries_used=2,
            next_attempt="2026-11-30T11:09:00+00:00",
            last_error="connection refused",
        ),
        tz="Europe/Berlin",
        now=NOW,
    )
    assert view.why == "poll failing since 12:03 (2 of 3 retries, next 12:09); connection refused"


def test_host_view_without_an_actor_is_unknown_for_a_host_never_seen() -> None:
    assert host_view(None, health="pending", now=NOW).condition == "unknown"
    seen = host_view(None, health="degraded", reason="CRL expired", last_seen=NOW, now=NOW)
    assert (seen.condition, seen.why) == ("degraded", "CRL expired")


def test_times_are_shown_in_the_users_zone_with_utc_on_hover() -> None:
    at = dt.datetime(2026, 7, 1, 22, 30, tzinfo=dt.UTC)
    assert format_time(at, "Europe/Berlin", now=NOW) == "2026-07-02 00:30"
    assert format_time(NOW, "America/New_York", now=NOW) == "07:00"
    assert str(time_tag(at, "Asia/Tokyo")) == (
        '<time datetime="2026-07-01T22:30:00+00:00" title="2026-07-01 22:30:00 UTC">'
        "2026-07-02 07:30</time>"
    )
    assert format_time(at, "No/Such_Zone", now=NOW) == "2026-07-01 22:30"  # unknown: UTC
