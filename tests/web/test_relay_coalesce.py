"""The relay coalesces: a slow browser gets the latest state of every host, never a drop."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx2
import pytest
import trio
import trio.lowlevel
import trio_websocket

from actors.state import HostSnapshot
from web.relay import Relay

from ..conftest import Pki
from .conftest import WebRig
from .test_authz_matrix import OPR, PASSWORD, build_world, relay_cookie, user_client
from .test_relay import browser_context, serve, session_cookie

pytestmark = pytest.mark.timeout(60)

HOSTS = 20
BURST = 2_000


def open_socket(base_url: str, cookie: str, pki: Pki, max_message_size: int = 2**20) -> Any:
    host, port = base_url.removeprefix("https://").split(":")
    return trio_websocket.open_websocket(
        host,
        int(port),
        "/api/v1/live",
        use_ssl=browser_context(pki),
        extra_headers=[
            (b"cookie", f"pm_session={cookie}".encode()),
            (b"origin", base_url.encode()),
        ],  # fmt: skip
        max_message_size=max_message_size,
    )


async def scoped_hosts(web_rig: WebRig, client: httpx2.AsyncClient) -> tuple[int, int]:
    """An operator of group "in" (user "operator-user") and one host inside and one outside
    their group, each with a published state: (inside, outside)."""
    world = await build_world(web_rig, client)
    inside = await world.targets("in")
    outside = await world.targets("out")
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    await operator.aclose()
    in_id, out_id = inside.ids["host_id"], outside.ids["host_id"]
    fleet = web_rig.system.fleet
    for host_id in (in_id, out_id):
        if fleet.get(host_id) is None:
            fleet.publish(HostSnapshot(host_id, f"host-{host_id}"))
    return in_id, out_id


def apply(known: dict[int, str], message: dict[str, Any]) -> None:
    """What the page does with a message: the last_error of every host it shows."""
    if message["type"] == "snapshot":
        known.clear()
        known.update({h["host_id"]: h["last_error"] for h in message["hosts"]})
    elif message["type"] == "change":
        known[message["host"]["host_id"]] = message["host"]["last_error"]
    elif message["type"] == "removed":
        known.pop(message["host_id"], None)


async def read_until(ws: Any, known: dict[int, str], wanted: dict[int, str]) -> int:
    """Read messages until the page shows ``wanted``; returns how many arrived."""
    count = 0
    while {h: known.get(h) for h in wanted} != wanted:
        apply(known, json.loads(await ws.get_message()))
        count += 1
    return count


def latest_error(fleet: Any, host_id: int) -> str:
    current = fleet.get(host_id)
    return str(current.last_error) if current is not None else ""


def burst(fleet: Any, host_ids: list[int], rounds: int, *, yield_every: int | None) -> Any:
    async def run() -> dict[int, str]:
        published = 0
        for round_ in range(rounds):
            for host_id in host_ids:
                current = fleet.get(host_id)
                fleet.publish(dataclasses.replace(current, last_error=f"v{round_}"))
                published += 1
                if yield_every and published % yield_every == 0:
                    await trio.lowlevel.checkpoint()
        return {h: f"v{rounds - 1}" for h in host_ids}

    return run


async def test_a_slow_subscriber_gets_the_latest_state_of_every_host_after_a_burst_of_2000(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    fleet = web_rig.system.fleet
    host_ids = list(range(900_001, 900_001 + HOSTS))
    for host_id in host_ids:
        fleet.publish(HostSnapshot(host_id, f"burst-{host_id}", last_error="start"))
    base_url, stop = await serve(nursery, web_rig, pki)
    relay: Relay = web_rig.app.state.relay
    relay.flush_every = 0.2
    cookie = await session_cookie(base_url, web_rig, pki)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as ws:
            known: dict[int, str] = {}
            apply(known, json.loads(await ws.get_message()))
            assert {h: known[h] for h in host_ids} == dict.fromkeys(host_ids, "start")
            # Two bursts of 2,000 changes while the browser reads nothing (it reads only after
            # each burst): one published in
            # one go (it overflows the fleet's buffer of the socket: a fresh snapshot
            # follows), one interleaved with other tasks (coalesced into the dirty set).
            for yield_every in (None, 10):
                wanted = await burst(fleet, host_ids, BURST // HOSTS, yield_every=yield_every)()
                received = await read_until(ws, known, wanted)
                assert received < BURST // 10  # far fewer, newer messages
            await ws.send_message('{"action": "noop"}')  # the socket is still open
    assert relay.dropped == 0
    assert relay.resyncs >= 1
    stop.set()


async def test_coalesced_changes_stay_within_the_users_scope(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    in_id, out_id = await scoped_hosts(web_rig, client)
    fleet = web_rig.system.fleet
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    with trio.fail_after(30):
        async with open_socket(base_url, cookie, pki) as ws:
            known: dict[int, str] = {}
            apply(known, json.loads(await ws.get_message()))
            assert set(known) == {in_id}
            for yield_every in (None, 10):
                await burst(fleet, [in_id, out_id], BURST // 2, yield_every=yield_every)()
                current = fleet.get(in_id)
                assert current is not None
                fleet.publish(dataclasses.replace(current, last_error="last"))
                seen: list[str] = []
                # the host's own actor may publish after "last" (a poll): the socket must end
                # on whatever is latest, so compare with the fleet's current state
                while known.get(in_id) != latest_error(fleet, in_id):
                    text = await ws.get_message()
                    seen.append(text)
                    apply(known, json.loads(text))
                assert set(known) == {in_id}
                assert all(
                    h["host_id"] == in_id
                    for t in seen
                    for h in json.loads(t).get("hosts", [json.loads(t).get("host")])
                    if h is not None
                )
    stop.set()
