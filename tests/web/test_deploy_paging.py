"""The Deploy page on a large fleet (issue 16 r5/J point 5): it never loads or renders every
host: the selection is counted with its first names shown, a server-side search lists hosts to
tick, a selection can be narrowed by the hosts' condition now, and the plan table lists its
first rows with the rest counted."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx2
import psycopg
import pytest

from storage import insert_host, job_rows, set_paused

from .conftest import WebRig, form_token

pytestmark = pytest.mark.timeout(120)

BULK = 520  # above the 500 plan rows the page renders


async def bulk(web_rig: WebRig, count: int = BULK) -> list[int]:
    """``count`` never-polled hosts (no address: nothing is contacted) in group 'bulk', with
    display names 'Bulk NNN' unlike their registered names."""

    def run(conn: psycopg.Connection[Any]) -> list[int]:
        return [
            insert_host(
                conn, name=f"bulk-{i:03d}", address=None, display_name=f"Bulk {i:03d}",
                groups=("bulk",),
            ).id
            for i in range(count)
        ]  # fmt: skip

    return await web_rig.db.run(run)


async def test_deploy_counts_the_selection_names_the_first_hosts_and_lists_500_plan_rows(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await bulk(web_rig)
    page = await client.get("/deploy", params={"group": "bulk", "all_hosts": "on"})
    assert page.status_code == 200, page.text[-2000:]
    text = html.unescape(page.text)
    assert f'id="host-count">{BULK}</strong> host(s) selected' in text
    names = re.search(r'id="host-names">(.*?)</span>', text)
    assert names is not None
    assert names[1] == ", ".join(f"Bulk {i:03d}" for i in range(12))  # display names
    assert f"and {BULK - 12} more" in text
    assert "bulk-013" not in text and "Bulk 013" not in text.split('id="plan-hosts"')[0]
    assert text.count("data-plan-host=") == 500
    assert f"The first 500 of {BULK} hosts are listed" in text


async def test_deploy_host_search_lists_matches_and_selects_the_ticked_ones(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await bulk(web_rig, 60)
    found = html.unescape((await client.get("/deploy", params={"q": "bulk-00"})).text)
    listed = re.findall(r'name="pick" value="(\d+)"', found)
    assert sorted(map(int, listed)) == ids[:10]
    many = html.unescape((await client.get("/deploy", params={"q": "bulk"})).text)
    assert len(re.findall(r'name="pick"', many)) == 50 and 'id="more-found"' in many
    picked = await client.get("/deploy", params=[("pick", str(ids[3])), ("pick", str(ids[5]))])
    text = html.unescape(picked.text)
    assert 'id="host-count">2</strong>' in text
    assert f'name="host_ids" value="{ids[3]},{ids[5]}"' in text


async def test_deploy_by_condition_selects_the_hosts_in_it_now_and_the_job_names_them(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await bulk(web_rig, 5)
    page = await client.get("/deploy", params={"group": "bulk", "condition": "unknown"})
    text = html.unescape(page.text)
    assert 'id="host-count">5</strong>' in text, text[-3000:]
    assert '<input type="hidden" name="condition" value="unknown">' in text
    none = html.unescape(
        (await client.get("/deploy", params={"group": "bulk", "condition": "healthy"})).text
    )
    assert "no host of this selection is healthy now" in none
    bad = await client.get("/deploy", params={"group": "bulk", "condition": "sunny"})
    assert bad.status_code == 422 and 'id="err-condition"' in bad.text
    form = {
        "csrf_token": form_token(text), "group": "bulk", "filter": "", "condition": "unknown",
        "selection": "all", "schedule": "window", "reboot_delay_s": "0", "action": "deploy",
    }  # fmt: skip
    created = await client.post("/deploy", data={**form, "all_hosts": "on"})
    assert created.status_code == 303, created.text[-2000:]
    job_id = int(created.headers["location"].split("/jobs/")[1].split("?")[0])
    assert sorted(r.host_id for r in await web_rig.db.run(job_rows, job_id)) == ids


async def test_deploy_by_condition_reaching_every_host_needs_the_all_hosts_confirmation(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await bulk(web_rig, 4)  # the whole fleet, all 'unknown'
    page = await client.get("/deploy", params={"group": "bulk", "condition": "unknown"})
    form = {
        "csrf_token": form_token(page.text), "group": "bulk", "filter": "",
        "condition": "unknown", "selection": "all", "schedule": "now", "action": "deploy",
    }  # fmt: skip
    refused = await client.post("/deploy", data=form)
    assert refused.status_code == 422, refused.text[-2000:]
    text = html.unescape(refused.text)
    assert 'id="err-all_hosts"' in text and "all 4 hosts" in text
    assert await web_rig.db.run(
        lambda conn: conn.execute("SELECT count(*) FROM jobs").fetchone()
    ) == (0,)


async def test_the_plan_breaks_skipped_hosts_down_by_code_and_lists_them_first(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await bulk(web_rig, 6)
    for host_id in ids[4:]:
        await web_rig.db.run(set_paused, host_id, True)
    params = {"group": "bulk", "all_hosts": "on", "schedule": "now"}
    text = html.unescape((await client.get("/deploy", params=params)).text)
    skips = re.search(r'id="plan-skips"[^>]*>(.*?)</ul>', text, re.S)
    assert skips is not None, text[-3000:]
    assert "<strong>PAUSED</strong>: 2 host(s) — Bulk 004, Bulk 005" in skips[1]
    listed = [int(i) for i in re.findall(r'data-plan-host="(\d+)"', text)]
    assert listed == ids[4:] + ids[:4]  # the skipped first, then plan order
    assert "the job ends <strong>partially failed</strong>" in text
