"""The relay's first snapshot: paged, complete, scoped, and serialised once for every socket."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio
import trio.lowlevel

from actors.state import HostSnapshot
from web.relay import PAGE_SIZE, Relay
from web.serialize import to_json

from ..conftest import Pki
from .conftest import WebRig
from .test_authz_matrix import PASSWORD, relay_cookie
from .test_relay import serve, session_cookie
from .test_relay_coalesce import open_socket, scoped_hosts

pytestmark = pytest.mark.timeout(90)

FAKE = 2_000
FIRST_ID = 700_001


def publish_fake_hosts(rig: WebRig) -> list[int]:
    """2,000 host states without actors (nothing polls them: the fleet stays quiet)."""
    ids = list(range(FIRST_ID, FIRST_ID + FAKE))
    for host_id in ids:
        rig.system.fleet.publish(HostSnapshot(host_id, f"fake-{host_id}", last_error="x" * 200))
    return ids


async def read_snapshot(ws: Any) -> list[dict[str, Any]]:
    """The pages of one snapshot, in order (the first is "snapshot", the rest "snapshot_page")."""
    pages = [json.loads(await ws.get_message())]
    assert pages[0]["type"] == "snapshot"
    while pages[-1]["page"] < pages[-1]["pages"]:
        pages.append(json.loads(await ws.get_message()))
    return pages


def host_ids(pages: list[dict[str, Any]]) -> list[int]:
    return [h["host_id"] for page in pages for h in page["hosts"]]


async def test_a_2000_host_snapshot_arrives_in_pages_of_at_most_500_with_every_host_once(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, client: httpx2.AsyncClient
) -> None:
    ids = publish_fake_hosts(web_rig)
    base_url, stop = await serve(nursery, web_rig, pki)
    relay: Relay = web_rig.app.state.relay
    cookie = await session_cookie(base_url, web_rig, pki)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as ws:
            pages = await read_snapshot(ws)
    assert [p["type"] for p in pages] == ["snapshot"] + ["snapshot_page"] * 3
    assert [(p["page"], p["pages"]) for p in pages] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(len(p["hosts"]) <= PAGE_SIZE for p in pages)
    received = host_ids(pages)
    assert sorted(received) == received  # in host id order
    assert received == sorted({s.host_id for s in web_rig.system.fleet.snapshots()})
    by_id = {h["host_id"]: h for page in pages for h in page["hosts"]}
    for snapshot in web_rig.system.fleet.snapshots():  # the same JSON as the API's serialiser
        assert by_id[snapshot.host_id] == json.loads(json.dumps(to_json(snapshot)))
    assert set(ids) <= set(received)
    assert (relay.snapshots_sent, relay.snapshot_pages) == (1, 4)
    metrics = (await client.get("/metrics")).text
    assert "patchmgr_relay_snapshot_pages_total 4" in metrics
    assert "patchmgr_relay_snapshots_total 1" in metrics
    assert "patchmgr_relay_resyncs_total 0" in metrics
    assert "# TYPE patchmgr_relay_subscribers gauge" in metrics
    stop.set()


async def test_other_tasks_run_between_the_pages_of_a_snapshot(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    publish_fake_hosts(web_rig)
    base_url, stop = await serve(nursery, web_rig, pki)
    relay: Relay = web_rig.app.state.relay
    cookie = await session_cookie(base_url, web_rig, pki)
    seen: set[int] = set()  # the pages sent so far, as seen by another task while it ran
    done = trio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.add(relay.snapshot_pages)
            await trio.lowlevel.checkpoint()

    nursery.start_soon(watch)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as ws:
            await read_snapshot(ws)
    done.set()
    assert {1, 2, 3} <= seen
    stop.set()


async def test_a_second_socket_reuses_the_first_sockets_serialised_pages(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    publish_fake_hosts(web_rig)
    base_url, stop = await serve(nursery, web_rig, pki)
    relay: Relay = web_rig.app.state.relay
    cookie = await session_cookie(base_url, web_rig, pki)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as first:
            first_pages = await read_snapshot(first)
            serialised = relay.serialised
            assert serialised >= FAKE
            assert relay.pages_reused == 0
            async with open_socket(base_url, cookie, pki) as second:
                second_pages = await read_snapshot(second)
    assert second_pages == first_pages
    assert relay.serialised == serialised  # no host serialised again
    assert relay.pages_reused == len(first_pages) == 4
    stop.set()


async def test_a_scoped_users_snapshot_holds_only_the_hosts_of_their_groups(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    in_id, _out = await scoped_hosts(web_rig, client)  # the outside host: not in the pages
    publish_fake_hosts(web_rig)  # not in any group: the operator sees none of them
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as ws:
            pages = await read_snapshot(ws)
    assert [(p["type"], p["page"], p["pages"]) for p in pages] == [("snapshot", 1, 1)]
    assert host_ids(pages) == [in_id]
    stop.set()
