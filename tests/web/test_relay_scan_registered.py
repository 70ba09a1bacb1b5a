"""Every scan update of the live relay says which finds are registered hosts already (issue 16
point 8, review N7): the discovery page marks rows that appear while the scan runs, and its
"select all" leaves them out."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio
import trio_websocket

from simulator import Fleet

from ..conftest import Pki
from .conftest import WebRig
from .test_relay import browser_context, serve, session_cookie

pytestmark = pytest.mark.timeout(60)


async def test_scan_updates_carry_the_registered_hosts_among_the_finds(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    known, new = fleet.agents
    host_id = (await client.post("/api/v1/hosts", json={"name": known.address})).json()["id"]
    prefix = known.address.rsplit(".", 1)[0]
    response = await client.post("/api/v1/discovery", json={"cidr": f"{prefix}.0/29"})
    assert response.status_code == 202, response.text
    scan_id = response.json()["scan_id"]
    base, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(
            host, int(port), "/api/v1/live", use_ssl=browser_context(pki),
            extra_headers=[(b"cookie", f"pm_session={cookie}".encode()),
                           (b"origin", base.encode())],
        ) as ws:  # fmt: skip
            await ws.send_message(json.dumps({"action": "watch_scan", "scan_id": scan_id}))
            while True:
                message: dict[str, Any] = json.loads(await ws.get_message())
                if message["type"] == "scan" and message["progress"]["done"]:
                    break
    assert {f["address"] for f in message["found"]} == {known.address, new.address}
    assert message["registered"] == {
        known.address: {"address": known.address, "host_id": host_id, "name": known.address}
    }
    stop.set()
