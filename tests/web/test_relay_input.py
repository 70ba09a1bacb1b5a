"""The live relay ignores what it cannot use from a browser (binary frames, oversized or deeply
nested text) and keeps the socket: over a real WebSocket on the real listener."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from actors.state import HostSnapshot

from ..conftest import Pki
from .conftest import WebRig
from .test_relay import browser_context, serve, session_cookie

pytestmark = pytest.mark.timeout(60)


async def test_binary_and_deeply_nested_frames_are_ignored_and_the_socket_stays_open(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    base, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(
            host,
            int(port),
            "/api/v1/live",
            use_ssl=browser_context(pki),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", base.encode()),
            ],
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            await ws.send_message(b"\x00\x01binary")
            await ws.send_message("[" * 100_000)
            await ws.send_message("x" * 200_000)
            await ws.send_message('{"action": "watch_scan", "scan_id": "' + "9" * 5000 + '"}')
            await ws.send_message('{"action": "watch_job", "job_id": 99999999999999999999}')
            await ws.send_message('{"action": "watch_scan", "scan_id": -99999999999999999999}')
            web_rig.system.fleet.publish(HostSnapshot(424242, "still-listening"))
            message = json.loads(await ws.get_message())
            assert message["type"] == "change"
            assert message["host"]["name"] == "still-listening"
            assert not ws.closed
    stop.set()
