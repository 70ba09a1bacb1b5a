"""A scope change during a later snapshot (a resync after a burst): the host that entered the
scope is never sent before the snapshot's first page, which would replace the page's state
and lose it."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio
import trio.lowlevel

from web import authz
from web.relay import Relay

from ..conftest import Pki
from .conftest import WebRig
from .test_authz_matrix import OPR, PASSWORD, build_world, relay_cookie, user_client
from .test_relay import serve
from .test_relay_coalesce import apply, burst, open_socket
from .test_relay_snapshot import read_snapshot

pytestmark = pytest.mark.timeout(90)

BULK = 1_000  # hosts of the operator's group: the resync's first page takes a while to build


def add_paused_hosts(conn: Any, group_id: int, count: int) -> list[int]:
    """``count`` paused hosts (their actors never poll) in group ``group_id``."""
    rows = conn.execute(
        "INSERT INTO hosts (name, address, paused) SELECT 'resync-' || g, NULL, true"
        " FROM generate_series(1, %s) g RETURNING id",
        (count,),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    conn.execute(
        "INSERT INTO host_groups (host_id, group_id) SELECT unnest(%s::bigint[]), %s",
        (ids, group_id),
    )
    return ids


async def test_a_host_entering_the_scope_while_a_resync_starts_is_kept_after_its_first_page(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    world = await build_world(web_rig, client)
    group_id = world.group_ids["in"]
    outside = await world.targets("out")
    newcomer = outside.ids["host_id"]
    operator = await user_client(web_rig, OPR, [group_id])
    await operator.aclose()
    bulk = await web_rig.db.run(add_paused_hosts, group_id, BULK)
    fleet = web_rig.system.fleet
    wanted = {*bulk, newcomer}
    with trio.fail_after(30):  # every host has its actor's state
        await fleet.wait_until(lambda states: wanted <= {s.host_id for s in states})
    base_url, stop = await serve(nursery, web_rig, pki)
    relay: Relay = web_rig.app.state.relay
    relay.page_size = BULK + 10  # one page: built (and serialised) before anything is sent
    relay.flush_every = 0.01
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    with trio.fail_after(60):
        async with open_socket(base_url, cookie, pki, max_message_size=64 * 2**20) as ws:
            known: dict[int, str] = {}
            for page in await read_snapshot(ws):
                apply(known, page)
            assert set(bulk) <= set(known) and newcomer not in known
            # The newcomer joins the group (announced only once the resync has started).
            await web_rig.db.run(
                lambda c: c.execute(
                    "INSERT INTO host_groups (host_id, group_id) VALUES (%s, %s)",
                    (newcomer, group_id),
                )
            )
            started = relay.snapshots_sent

            async def announce_once_the_resync_started() -> None:
                while relay.snapshots_sent == started:
                    await trio.lowlevel.checkpoint()
                authz.scope_changed(web_rig.db)

            nursery.start_soon(announce_once_the_resync_started)
            # A burst in one go overflows the socket's subscription: a fresh snapshot follows.
            await burst(fleet, bulk, 3, yield_every=None)()
            resynced = newcomer_sent = False
            order: list[str] = []
            while not (resynced and newcomer_sent):
                message = json.loads(await ws.get_message())
                apply(known, message)
                if message["type"] in ("snapshot", "snapshot_page"):
                    order.append(message["type"])
                    resynced = message["page"] == message["pages"]
                elif message["type"] == "change" and message["host"]["host_id"] == newcomer:
                    order.append("newcomer")
                    newcomer_sent = True
    assert relay.resyncs >= 1
    assert order.index("snapshot") < order.index("newcomer"), order
    assert newcomer in known  # the page shows it
    stop.set()
