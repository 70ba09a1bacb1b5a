"""One display everywhere (issue 16 point 4): natural sort of names and addresses, health by
severity, and times in the user's time zone (a profile setting) with UTC on hover."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import trio

from simulator import Fleet
from storage import Database, HostFilter, get_job, insert_host, search_hosts

from .conftest import WebRig, form_token
from .test_cli_shapes import run_cli
from .test_jobs_api import registered


def names(db_rows: list[Any]) -> list[str]:
    return [h.display_name or h.name for h in db_rows]


async def test_hosts_sort_naturally_by_name_and_address(db: Database) -> None:
    for name in ("127.70.0.10", "127.70.0.2", "web10", "127.70.0.1", "web2", "Web3"):
        await db.run(lambda c, n=name: insert_host(c, name=n.lower(), address=None, display_name=n))
    rows, _ = await db.run(search_hosts, HostFilter(sort="name"))
    assert names(rows) == ["127.70.0.1", "127.70.0.2", "127.70.0.10", "web2", "Web3", "web10"]
    rows, _ = await db.run(search_hosts, HostFilter(sort="name", descending=True))
    assert names(rows) == ["web10", "Web3", "web2", "127.70.0.10", "127.70.0.2", "127.70.0.1"]


async def test_health_sorts_by_severity_so_troubled_hosts_come_first(db: Database) -> None:
    health = {"a": "healthy", "b": "unreachable", "c": "pending", "d": "degraded"}
    for name in health:
        await db.run(lambda c, n=name: insert_host(c, name=n, address=None))

    def set_health(conn: psycopg.Connection[Any]) -> None:
        for name, state in health.items():
            conn.execute("UPDATE hosts SET health = %s WHERE name = %s", (state, name))

    await db.run(set_health)
    rows, _ = await db.run(search_hosts, HostFilter(sort="health"))
    assert [h.health for h in rows] == ["unreachable", "degraded", "pending", "healthy"]


async def test_the_profile_time_zone_changes_how_every_page_shows_times(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host_id = (await client.post("/api/v1/hosts", json={"name": "127.70.200.10"})).json()["id"]
    profile = await client.get("/profile")
    assert 'name="time_zone"' in profile.text
    saved = await client.post(
        "/profile/time-zone",
        data={"csrf_token": form_token(profile.text), "time_zone": "Asia/Kolkata"},
    )
    assert saved.status_code == 303 and "Time+zone+saved" in saved.headers["location"]
    page = (await client.get(f"/hosts/{host_id}")).text
    assert '<meta name="time-zone" content="Asia/Kolkata">' in page
    tag = re.search(r'<time datetime="([^"]+)" title="([^"]+) UTC">([^<]+)</time>', page)
    assert tag is not None  # e.g. the next health poll
    utc_minute = tag[2][11:16]
    local = tag[3][-5:]
    # India is UTC+05:30: the minutes differ by 30 (hover shows UTC, the text local time).
    assert int(local[3:]) == (int(utc_minute[3:]) + 30) % 60


async def test_an_unknown_time_zone_is_refused_and_nothing_changes(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    profile = await client.get("/profile")
    refused = await client.post(
        "/profile/time-zone",
        data={"csrf_token": form_token(profile.text), "time_zone": "Mars/Olympus"},
    )
    assert refused.status_code == 303 and "not+changed" in refused.headers["location"]
    page = (await client.get("/hosts")).text
    assert '<meta name="time-zone" content="UTC">' in page


async def test_an_unknown_time_zone_is_reported_next_to_the_time_zone_field(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    profile = await client.get("/profile")
    refused = await client.post(
        "/profile/time-zone",
        data={"csrf_token": form_token(profile.text), "time_zone": "Mars/Olympus"},
    )
    page = (await client.get(refused.headers["location"])).text
    field = re.search(r'<select id="time-zone"[^>]*>', page)
    assert field is not None
    assert 'aria-invalid="true"' in field[0] and 'aria-describedby="time-zone-error"' in field[0]
    error = re.search(r'<p class="error" id="time-zone-error">([^<]*)</p>', page)
    assert error is not None and "choose a time zone from the list" in error[1].lower()
    # The error sits in the time zone form, after its field (not only in the banner on top).
    form = page[page.index('action="/profile/time-zone"') :]
    assert form.index('id="time-zone-error"') < form.index("</form>")
    plain = (await client.get("/profile")).text
    assert 'id="time-zone-error"' not in plain


async def test_job_page_shows_row_timings_versions_before_after_and_the_list_its_duration(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    await registered(web_rig, client, fleet)
    package = sorted(fleet.agents[0].profile.upgradable)[0]
    created = await client.post(
        "/api/v1/jobs",
        json={"group": "web", "schedule": "now", "selection": "all", "all_hosts": True},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    with trio.fail_after(60):
        while (await web_rig.db.run(get_job, job_id)).status in ("queued", "running"):
            await web_rig.system.scheduler.jobs.wait_pass()  # type: ignore[union-attr]
    page = html.unescape((await client.get(f"/jobs/{job_id}")).text)
    for agent in fleet.agents:
        assert agent.address in page  # the address beside the host's name
    timings = re.findall(r'data-row-timing="\d+">(.*?)</td>', page, re.S)
    assert len(timings) == 2
    for timing in timings:
        assert re.search(
            r"queued <time[^>]*>[\d:-]+.*started <time.*finished <time.*took \d+", timing, re.S
        )
    versions = re.findall(r'data-row-versions="\d+">(.*?)</td>', page, re.S)
    assert any(re.search(rf"{re.escape(package)} \S+ → \S+", v) for v in versions), versions
    assert 'id="job-timing">created <time' in page and "by admin" in page
    listing = html.unescape((await client.get("/jobs")).text)
    row = re.search(rf'href="/jobs/{job_id}">#{job_id}</a>.*?</tr>', listing, re.S)
    assert row is not None and "by admin" in row[0]
    assert re.search(r"<td>\d+ (s|min \d+ s)</td>", row[0]), row[0]


async def test_discovery_marks_registered_agents_and_keeps_a_scan_history(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    known, new = fleet.agents
    host_id = (await client.post("/api/v1/hosts", json={"name": known.address})).json()["id"]
    prefix = known.address.rsplit(".", 1)[0]
    response = await client.post("/api/v1/discovery", json={"cidr": f"{prefix}.0/29"})
    assert response.status_code == 202, response.text
    scan_id = response.json()["scan_id"]
    with trio.fail_after(30):
        while (progress := await web_rig.system.handle.wait_discovery_change(scan_id)) is not None:
            if progress.done:
                break
    page = (await client.get(f"/discovery/{scan_id}")).text
    marked = re.search(rf'data-registered="{re.escape(known.address)}">(.*?)</td>', page)
    assert marked is not None and f'href="/hosts/{host_id}"' in marked[1]
    unmarked = re.search(rf'data-registered="{re.escape(new.address)}">(.*?)</td>', page)
    assert unmarked is not None and ">no<" in unmarked[1]
    assert 'id="select-all-found"' in page
    history = (await client.get("/discovery")).text
    row = re.search(rf'href="/discovery/{scan_id}">#{scan_id}</a>.*?</tr>', history, re.S)
    assert row is not None
    assert f"{prefix}.0/29" in row[0] and "finished" in row[0]
    assert re.search(r"2 of \d+ probed", row[0])
    assert "<time datetime=" in row[0]


async def test_the_cli_hosts_list_sorts_names_naturally(
    db: Database, db_conninfo: str, tmp_path: Path
) -> None:
    for name in ("127.70.0.10", "127.70.0.9", "web10", "web9"):
        await db.run(lambda c, n=name: insert_host(c, name=n, address=None))
    listed = await run_cli(db_conninfo, tmp_path, "hosts", "list", "--json")
    shown = [h["name"] for h in json.loads(listed.stdout)["hosts"]]
    assert shown == ["127.70.0.9", "127.70.0.10", "web9", "web10"]
