"""The agent's WebSocket heartbeat (agent-api.md §5): pings every interval, a client that
answers stays, a silent client is dropped without a close frame."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from ..conftest import Pki

pytestmark = pytest.mark.timeout(30)


async def open_raw(pki: Pki, agent: Any) -> tuple[trio.SSLStream[trio.SocketStream], WSConnection]:
    tcp = await trio.open_tcp_stream(agent.address, agent.port)
    tls = trio.SSLStream(tcp, pki.client_context(), server_hostname=agent.address)
    ws = WSConnection(ConnectionType.CLIENT)
    await tls.send_all(ws.send(Request(host=agent.address, target="/api/v1/ws/jobs")))
    return tls, ws


async def events(tls: trio.SSLStream[trio.SocketStream], ws: WSConnection) -> Any:
    """Yield wsproto events until the connection ends (EOF yields None)."""
    while True:
        try:
            data = await tls.receive_some(65536)
        except trio.BrokenResourceError:  # dropped without TLS close_notify: an abrupt end
            data = b""
        if not data:
            yield None
            return
        ws.receive_data(bytes(data))
        for event in ws.events():
            yield event


async def test_answering_client_stays_and_silent_client_is_dropped(
    pki: Pki, start_fleet: Any
) -> None:
    fleet = await start_fleet(1, ws_ping_s=0.05, ws_timeout_s=0.3)
    agent = fleet.agents[0]
    with trio.fail_after(20):
        # A client that answers every ping (as standard clients do) stays connected.
        tls, ws = await open_raw(pki, agent)
        pings = 0
        seen_greeting = False
        async for event in events(tls, ws):
            assert event is not None, "an answering client must not be dropped"
            if isinstance(event, AcceptConnection):
                continue
            if isinstance(event, TextMessage):
                seen_greeting = seen_greeting or '"event": "connected"' in event.data
            if isinstance(event, Ping):
                pings += 1
                await tls.send_all(ws.send(event.response()))
                if pings == 20:  # 20 pings of 0.05 s: well past the 0.3 s timeout
                    break
        assert seen_greeting
        await tls.aclose()

        # A client that never answers is dropped after the timeout, with no close frame.
        tls, ws = await open_raw(pki, agent)
        silent_pings = 0
        close_frames = 0
        async for event in events(tls, ws):
            if event is None:
                break
            silent_pings += isinstance(event, Ping)
            close_frames += isinstance(event, CloseConnection)
        assert close_frames == 0
        assert 3 <= silent_pings <= 8  # roughly timeout / interval
