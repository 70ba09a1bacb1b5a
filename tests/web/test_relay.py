"""The live relay through a real Hypercorn (TLS 1.3) and a real WebSocket client."""

from __future__ import annotations

import json
import ssl
from functools import partial
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
import trio_websocket

from actors import HealthState
from simulator import Fleet
from web import WebListener, serve_web

from ..conftest import Pki, fleet_addresses
from .conftest import CONF, WebRig, login

pytestmark = pytest.mark.timeout(60)


def browser_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


async def serve(nursery: trio.Nursery, rig: WebRig, pki: Pki) -> tuple[str, trio.Event]:
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path)
    urls = await nursery.start(partial(serve_web, rig.app, listener, stop.wait))
    return urls[0], stop


async def session_cookie(base: str, rig: WebRig, pki: Pki) -> str:
    async with httpx2.AsyncClient(verify=browser_context(pki), base_url=base) as http:
        await login(http, rig.password)
        return str(http.cookies["pm_session"])


async def test_unreachable_host_reaches_the_browser_within_a_second(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(2)
    agent = fleet.agents[0]
    row = await web_rig.system.handle.register_host(agent.address)
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda s: any(x.host_id == row.id and x.health is HealthState.HEALTHY for x in s)
        )
    base, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    published: dict[str, float] = {}

    async def watch_publisher() -> None:
        with web_rig.system.fleet.subscribe() as changes:
            async for change in changes:
                if change.snapshot.health is HealthState.UNREACHABLE:
                    published["at"] = trio.current_time()
                    return

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
            first = json.loads(await ws.get_message())
            assert first["type"] == "snapshot"
            assert [h["health"] for h in first["hosts"]] == ["healthy"]
            nursery.start_soon(watch_publisher)
            await trio.testing.wait_all_tasks_blocked()
            agent.set_faults({"down": True})
            web_rig.system.handle.refresh([row.id])
            while True:
                message = json.loads(await ws.get_message())
                if message["type"] == "change" and message["host"]["health"] == "unreachable":
                    received = trio.current_time()
                    break
    assert message["host"]["host_id"] == row.id
    assert received - published["at"] < 1.0
    stop.set()


async def test_websocket_without_session_or_from_elsewhere_is_refused(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    base, stop = await serve(nursery, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with trio_websocket.open_websocket(
                host, int(port), "/api/v1/live", use_ssl=browser_context(pki)
            ):
                pass
        cookie = await session_cookie(base, web_rig, pki)
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with trio_websocket.open_websocket(
                host,
                int(port),
                "/api/v1/live",
                use_ssl=browser_context(pki),
                extra_headers=[
                    (b"cookie", f"pm_session={cookie}".encode()),
                    (b"origin", b"https://evil.example"),
                ],
            ):
                pass
    stop.set()


async def test_a_second_watch_scan_replaces_the_first_follower_on_that_socket(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    # An "agent" that accepts TCP and never answers keeps both scans running until cancelled.
    address = fleet_addresses(1)
    listeners = await trio.open_tcp_listeners(12443, host=address)

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, silent, listeners)
    store = web_rig.system.scheduler.config
    (store.conf_dir / "patch-manager.toml").write_text(CONF + "connect_timeout_s = 30\n")
    assert store.reload() and store.current.discovery.connect_timeout_s == 30
    handle = web_rig.system.handle
    first = await handle.start_discovery(f"{address}/32")
    second = await handle.start_discovery(f"{address}/32")
    relay = web_rig.app.state.relay
    base, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")

    async def next_scan_message(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.get_message())
            if message["type"] == "scan":
                return message

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
            for scan in (first, second, first, second):
                await ws.send_message(json.dumps({"action": "watch_scan", "scan_id": scan.scan_id}))
                assert (await next_scan_message(ws))["scan_id"] == scan.scan_id
                await trio.testing.wait_all_tasks_blocked()
                assert relay.followers == 1
            # The follower of the first scan is gone: its end is not sent; the second's is.
            assert handle.cancel_discovery(first.scan_id)
            while (progress := await handle.wait_discovery_change(first.scan_id)) is not None:
                if progress.done:
                    break
            assert handle.cancel_discovery(second.scan_id)
            final = await next_scan_message(ws)
            assert final["scan_id"] == second.scan_id
            assert final["progress"]["done"] and final["progress"]["cancelled"]
            await trio.testing.wait_all_tasks_blocked()
            assert relay.followers == 0
    stop.set()
