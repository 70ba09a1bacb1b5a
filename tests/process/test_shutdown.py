"""The shutdown ladder of `patch-manager serve` (R-0.1), as a real process."""

from __future__ import annotations

import json
import signal
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import trio
import trio_websocket

from .sessions import log_in_and_change


async def session_cookie(server: Any) -> str:
    """Log in as the bootstrap admin; the session cookie."""
    async with httpx2.AsyncClient(
        base_url=server.url, verify=server.ssl_context(), timeout=10
    ) as client:
        await log_in_and_change(client, server)
        cookie = client.cookies.get("pm_session")
    assert cookie
    return cookie


LADDER = (
    "shutdown: no new work admitted",
    "relay WebSocket(s) closed with a close frame",
    "shutdown: host actors stopped",
    "shutdown: host states flushed",
)


async def test_sigterm_walks_the_ladder_and_closes_relay_websockets_with_a_close_frame(
    start_server: Any,
) -> None:
    with trio.fail_after(90):
        server = await start_server()
        await server.wait_ready()
        cookie = await session_cookie(server)
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        async with trio_websocket.open_websocket(
            url.hostname,
            url.port,
            "/api/v1/live",
            use_ssl=server.ssl_context(),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", server.url.rstrip("/").encode()),
            ],
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            first = len(server.logs)
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            reason = closed.value.reason
            assert reason is not None
            assert reason.code == 1001  # a close frame, not a dropped connection
            assert reason.reason == "server shutting down"
        assert await server.process.wait() == 0
    messages = [str(line.get("message", "")) for line in server.logs[first:]]
    rungs = [next(i for i, m in enumerate(messages) if fragment in m) for fragment in LADDER]
    assert rungs == sorted(rungs)
    assert "1 relay WebSocket(s) closed with a close frame" in messages[rungs[1]]
    assert messages[rungs[3]].endswith("(0 state(s), 0 transition(s) left)")
    assert messages.index("stopped") > rungs[3]  # PostgreSQL stopped last
