"""Review F16a: the API, the summary, the actors list and the CLI say the same condition as the
pages (never a stored all-clear for a stale or failing host); a crashed actor is never healthy;
the host list filters and sorts by the condition shown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import re
from typing import Any

import httpx2
import pytest
import trio

from actors.agent_records import Health
from actors.health import (
    HealthState,
    HealthTracker,
    after_agent_problem,
    after_health,
    after_request_success,
)
from actors.state import HostSnapshot, Phase, stale_after
from patch_manager.hosts_cli import all_hosts, hosts_json, hosts_listing
from simulator.fleet import Fleet
from storage import create_scan, get_user
from storage.display import set_user_time_zone
from web.freshness import UserZones, host_view
from web.serialize import to_json

from .conftest import WebRig


async def healthy_host(web_rig: WebRig, client: httpx2.AsyncClient, fleet: Fleet) -> int:
    agent = fleet.agents[0]
    host_id: int = (await client.post("/api/v1/hosts", json={"name": agent.address})).json()["id"]
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda snaps: any(
                s.host_id == host_id
                and s.condition == "healthy"
                and s.patches_as_of is not None  # both first polls done: it publishes no more
                and s.phase is Phase.IDLE
                for s in snaps
            )
        )
    return host_id


def overdue(snapshot: HostSnapshot | None) -> HostSnapshot:
    """The same snapshot once its ``stale_after`` has passed (time passing publishes nothing)."""
    assert snapshot is not None
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return dataclasses.replace(snapshot, stale_after=past)


async def test_api_list_detail_actors_and_summary_say_stale_once_stale_after_has_passed(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    host_id = await healthy_host(web_rig, client, await start_fleet(1))
    fleet_state = web_rig.system.fleet
    fleet_state.publish(overdue(fleet_state.get(host_id)))
    listing = (await client.get("/api/v1/hosts")).json()
    item = next(h for h in listing["hosts"] if h["id"] == host_id)
    assert item["condition"] == "stale"
    assert item["why"].startswith("no successful poll since ")
    assert item["health_as_of"] and item["patches_as_of"] and item["stale_after"]
    detail = (await client.get(f"/api/v1/hosts/{host_id}")).json()
    assert detail["live"]["condition"] == "stale"
    actors = (await client.get("/api/v1/actors")).json()["actors"]
    assert [a["condition"] for a in actors if a["host_id"] == host_id] == ["stale"]
    summary = (await client.get("/api/v1/fleet/summary")).json()
    assert summary["by_condition"]["stale"] == 1
    assert summary["by_condition"]["healthy"] == 0


async def test_api_host_list_says_failing_for_a_host_whose_poll_fails(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    host_id = await healthy_host(web_rig, client, fleet)
    fleet.apply_faults(fleet.agents[0].address, {"down": True})
    assert (await client.post("/api/v1/hosts/refresh", json={"host_ids": [host_id]})).is_success
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda snaps: any(s.condition == "failing" for s in snaps)
        )
    item = (await client.get("/api/v1/hosts")).json()["hosts"][0]
    assert item["condition"] == "failing" and "poll failing since" in item["why"]


async def test_cli_host_list_says_stale_for_stored_health_older_than_the_stale_window(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    host_id = await healthy_host(web_rig, client, await start_fleet(1))
    await web_rig.system.sink.flush()  # the stored health the command line reads
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # test config: hourly polls
    rows = await all_hosts(web_rig.db, stale_s=7200, now=later)
    (item,) = hosts_json(rows)
    assert item["id"] == host_id and item["health"] == "healthy"
    assert item["condition"] == "stale"
    assert item["why"].startswith("no successful poll since ")
    fresh = hosts_json(await all_hosts(web_rig.db, stale_s=7200))
    # Not stale, yet no live data: never a 'healthy' the server may not see (test_cli_host_values)
    assert fresh[0]["condition"] == "unknown" and "stored health healthy" in fresh[0]["why"]


NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("phase", "said"),
    [
        (Phase.FAILED, "failed (crashed too often)"),
        (Phase.RESTARTING, "restarting after a crash"),
        (Phase.WAITING_FOR_DATABASE, "waiting for the database"),
    ],
)
def test_a_crashed_or_parked_actor_with_healthy_data_is_halted_with_its_error_never_healthy(
    phase: Phase, said: str
) -> None:
    snapshot = HostSnapshot(
        1,
        "web1",
        phase=phase,
        health=HealthState.HEALTHY,
        health_as_of=NOW - dt.timedelta(minutes=1),
        stale_after=NOW + dt.timedelta(hours=1),
        last_error="RuntimeError: boom",
    )
    assert snapshot.condition == "halted"
    view = host_view(to_json(snapshot), now=NOW)
    assert view.condition == "halted"
    assert view.why == f"{said}: RuntimeError: boom"


async def test_host_list_filters_and_sorts_by_the_condition_shown_and_dashboard_cards_link_there(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    up, down = fleet.agents
    up_id = (await client.post("/api/v1/hosts", json={"name": up.address})).json()["id"]
    down_id = (await client.post("/api/v1/hosts", json={"name": down.address})).json()["id"]
    fleet_state = web_rig.system.fleet
    with trio.fail_after(30):
        await fleet_state.wait_until(
            lambda snaps: len([s for s in snaps if s.condition == "healthy"]) == 2
        )
    fleet.apply_faults(down.address, {"down": True})
    assert (await client.post("/api/v1/hosts/refresh", json={"host_ids": [down_id]})).is_success
    with trio.fail_after(30):
        await fleet_state.wait_until(lambda snaps: any(s.condition == "failing" for s in snaps))

    def ids(reply: httpx2.Response) -> list[int]:
        assert reply.status_code == 200, reply.text
        return [h["id"] for h in reply.json()["hosts"]]

    assert ids(await client.get("/api/v1/hosts?condition=failing")) == [down_id]
    assert ids(await client.get("/api/v1/hosts?condition=healthy")) == [up_id]
    for condition in ("stale", "paused", "unknown", "halted"):
        assert ids(await client.get(f"/api/v1/hosts?condition={condition}")) == []
    assert ids(await client.get("/api/v1/hosts?sort=condition")) == [down_id, up_id]
    assert ids(await client.get("/api/v1/hosts?sort=condition&order=desc")) == [up_id, down_id]
    page = (await client.get("/hosts?condition=failing")).text
    assert f'data-host-condition="{down_id}">failing<' in page
    assert f'data-host-condition="{up_id}"' not in page
    dashboard = (await client.get("/")).text
    assert 'href="/hosts?condition=failing"' in dashboard
    assert re.search(r'data-count="failing">1<', dashboard)
    assert 'href="/hosts?condition=healthy"' in dashboard


GOOD = Health("healthy", 60, "1", None, None, None, None, None, None, None, None, None)


def test_a_patch_poll_problem_keeps_the_host_degraded_until_a_patch_poll_succeeds() -> None:
    tracker = after_health(HealthTracker(), GOOD)
    tracker = after_agent_problem(tracker, "protocol error: bad JSON", patch_poll=True)
    tracker = after_health(tracker, GOOD)  # the health polls keep passing
    assert tracker.state is HealthState.DEGRADED
    assert tracker.reason == "patch poll failing: protocol error: bad JSON"
    assert after_request_success(tracker).state is HealthState.HEALTHY


def test_data_is_stale_once_the_patch_data_is_older_than_two_patch_intervals_and_grace() -> None:
    health_as_of = NOW - dt.timedelta(minutes=1)
    patches_as_of = NOW - dt.timedelta(hours=5)
    due = stale_after(health_as_of, 300, 50, patches_as_of=patches_as_of, patch_interval_s=3600)
    assert due == patches_as_of + dt.timedelta(seconds=2 * 3600 + 50)
    assert stale_after(health_as_of, 300, 50) == health_as_of + dt.timedelta(seconds=650)


def test_host_view_says_which_poll_is_missing_when_the_patch_data_made_it_stale() -> None:
    view = host_view(
        {
            "condition": "healthy",
            "health_as_of": (NOW - dt.timedelta(minutes=1)).isoformat(),
            "patches_as_of": "2026-11-30T07:00:00+00:00",
            "stale_after": (NOW - dt.timedelta(minutes=5)).isoformat(),
            "stale_by_patches": True,
        },
        now=NOW,
    )
    assert view.condition == "stale" and view.why == "no successful patch poll since 07:00"


async def test_every_page_has_the_users_time_zone_after_a_restart(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    user = await web_rig.db.run(get_user, "admin")
    assert user is not None
    await web_rig.db.run(set_user_time_zone, user.id, "Asia/Kolkata")
    for zones in (o for o in gc.get_objects() if isinstance(o, UserZones)):
        zones.clear()  # what a restart does: nothing cached, the zone is in the database
    for path in ("/profile", "/audit", "/reports", "/users", "/certificates", "/notifications"):
        page = (await client.get(path)).text
        zone = re.search(r'<meta name="time-zone" content="([^"]+)">', page)
        assert zone is not None and zone[1] == "Asia/Kolkata", path


def test_a_host_whose_address_is_refused_says_not_polled_never_never_contacted() -> None:
    reason = "address refused by the address policy: outside agents.allow_addresses"
    snapshot = HostSnapshot(1, "web1", phase=Phase.REFUSED, health_reason=reason, last_error=reason)
    assert snapshot.condition == "halted"
    view = host_view(to_json(snapshot), now=NOW)
    assert view.why == f"not polled: {reason}"


async def test_cli_host_list_json_is_the_apis_reply_in_the_apis_order(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for name, shown in (
        ("127.70.201.1", "web10"),
        ("127.70.201.2", "web9"),
        ("127.70.201.3", "db1"),
    ):
        created = await client.post("/api/v1/hosts", json={"name": name, "display_name": shown})
        assert created.status_code == 201, created.text
    api = (await client.get("/api/v1/hosts?limit=500")).json()
    cli = hosts_listing(await all_hosts(web_rig.db))
    assert set(cli) == {"hosts", "total", "limit", "offset"} and cli["total"] == 3
    assert [h["id"] for h in cli["hosts"]] == [h["id"] for h in api["hosts"]]
    assert [h["display_name"] for h in cli["hosts"]] == ["db1", "web9", "web10"]
    assert set(cli["hosts"][0]) == set(api["hosts"][0])


async def test_a_stored_zone_this_system_does_not_know_is_served_as_utc(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    user = await web_rig.db.run(get_user, "admin")
    assert user is not None
    await web_rig.db.run(set_user_time_zone, user.id, "Mars/Olympus")  # e.g. tzdata removed
    for zones in (o for o in gc.get_objects() if isinstance(o, UserZones)):
        zones.clear()
    page = (await client.get("/hosts")).text
    zone = re.search(r'<meta name="time-zone" content="([^"]+)">', page)
    assert zone is not None and zone[1] == "UTC"  # app.js's Intl.DateTimeFormat would throw


async def test_a_scan_interrupted_by_a_restart_reads_failed_interrupted_in_the_history(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    scan_id = await web_rig.db.run(create_scan, "127.70.202.0/29", 6)  # running, in no process
    page = (await client.get("/discovery")).text
    row = re.search(rf'href="/discovery/{scan_id}">#{scan_id}</a>.*?</tr>', page, re.S)
    assert row is not None
    assert "<td>failed (interrupted)</td>" in row[0] and "<td>running</td>" not in row[0]
