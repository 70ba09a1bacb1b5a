"""A small HTTP/1.1 + WebSocket server over TLS 1.3 for one simulated agent (h11 + wsproto).

Written directly on trio streams rather than on an ASGI server because the simulator must
reproduce what a framework would hide: who sees the client certificate, when the connection is
dropped instead of answered, text/plain framework errors, the request-head timeout and keep-alive
of the real agent (actix-web), and WebSocket connections that end without a close frame.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 3.0  # rustls/actix default
REQUEST_HEAD_TIMEOUT = 5.0  # actix client_request_timeout
KEEP_ALIVE = 15.0
MAX_BODY = 2 * 1024 * 1024
WS_PING_INTERVAL = 5.0
WS_CLIENT_TIMEOUT = 10.0
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes
    peer: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_count(self, name: str) -> int:
        return sum(1 for key, _ in self.headers if key == name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class Drop(Exception):
    """Raised by a handler: close the connection without answering."""


class WebSocketAccept:
    """Returned by a handler: switch this connection to the WebSocket session."""


class Agent(Protocol):
    """What the server needs from a simulated agent."""

    def server_context(self) -> ssl.SSLContext: ...

    def stall_connections(self) -> bool: ...

    async def handle(self, request: Request) -> Response | WebSocketAccept: ...

    async def websocket_session(self, ws: WebSocketSession) -> None: ...

    def websocket_heartbeat(self) -> tuple[float, float]:
        """(ping interval, client timeout) in seconds."""
        ...


def text(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, message.encode(), "text/plain; charset=utf-8", headers or [])


async def serve_connection(stream: trio.SocketStream, agent: Agent) -> None:
    """Serve one TCP connection until either side closes it. Never raises."""
    try:
        peer = stream.socket.getpeername()[0]
    except OSError:
        return
    try:
        if agent.stall_connections():
            # Half-open: accept, then never speak (the client's connect/handshake times out).
            with trio.move_on_after(120):
                await trio.sleep_forever()
            return
        tls = trio.SSLStream(stream, agent.server_context(), server_side=True,
                             https_compatible=True)  # fmt: skip
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
            return
        await _http_loop(tls, agent, peer)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass  # the peer went away: normal for a server
    except* Exception:
        # A bug in one connection must not take the agent (and the fleet) down.
        log.exception("simulated agent %s: connection handler failed", peer)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def _receive_event(conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream]) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(65536)
        conn.receive_data(bytes(data))


async def _send(
    conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], *events: h11.Event
) -> None:
    for event in events:
        data = conn.send(event)
        if data:
            await stream.send_all(data)


async def _http_loop(stream: trio.SSLStream[trio.SocketStream], agent: Agent, peer: str) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    first = True
    while True:
        # The first request head must arrive within 5 s; later ones within the keep-alive.
        with trio.move_on_after(REQUEST_HEAD_TIMEOUT if first else KEEP_ALIVE) as head_scope:
            try:
                event = await _receive_event(conn, stream)
            except h11.RemoteProtocolError:
                await _send_plain(conn, stream, text(400, "Bad request"))
                return
        if head_scope.cancelled_caught:
            if first:
                await _send_plain(conn, stream, text(408, "Request Timeout"))
            return
        first = False
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return
        if not isinstance(event, h11.Request):
            return
        body = b""
        with trio.move_on_after(REQUEST_HEAD_TIMEOUT) as body_scope:
            while True:
                try:
                    part = await _receive_event(conn, stream)
                except h11.RemoteProtocolError:
                    await _send_plain(conn, stream, text(400, "Bad request"))
                    return
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY:
                        await _send_plain(conn, stream, text(413, "Payload Too Large"))
                        return
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
        if body_scope.cancelled_caught:
            return
        target = urlsplit(event.target.decode("latin-1"))
        request = Request(
            method=event.method.decode("ascii", "replace").upper(),
            path=target.path,
            query=parse_qs(target.query, keep_blank_values=True),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers],
            body=body,
            peer=peer,
        )
        try:
            response = await agent.handle(request)
        except Drop:
            return
        if isinstance(response, WebSocketAccept):
            await _switch_to_websocket(conn, stream, request, agent)
            return
        await _send_plain(conn, stream, response)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _send_plain(
    conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], response: Response
) -> None:
    headers = [("content-length", str(len(response.body)))]
    if response.content_type:
        headers.append(("content-type", response.content_type))
    headers += response.headers
    with contextlib.suppress(h11.LocalProtocolError):
        await _send(
            conn,
            stream,
            h11.Response(
                status_code=response.status, headers=headers, reason=_reason(response.status)
            ),
            h11.Data(data=response.body),
            h11.EndOfMessage(),
        )


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def is_websocket_upgrade(request: Request) -> bool:
    upgrade = (request.header("upgrade") or "").lower()
    connection = (request.header("connection") or "").lower()
    return upgrade == "websocket" and "upgrade" in connection


async def _switch_to_websocket(
    conn: h11.Connection,
    stream: trio.SSLStream[trio.SocketStream],
    request: Request,
    agent: Agent,
) -> None:
    key = request.header("sec-websocket-key")
    if not key or request.header("sec-websocket-version") != "13":
        await _send_plain(conn, stream, text(400, "WebSocket handshake error"))
        return
    # The client's request is complete; h11 waits for our 101 before switching.
    if conn.next_event() is not h11.PAUSED:
        return
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
    await _send(
        conn,
        stream,
        h11.InformationalResponse(
            status_code=101,
            headers=[("upgrade", "websocket"), ("connection", "Upgrade"),
                     ("sec-websocket-accept", accept)],
        ),
    )  # fmt: skip
    trailing, _closed = conn.trailing_data
    ping, timeout = agent.websocket_heartbeat()
    session = WebSocketSession(stream, trailing, ping_interval=ping, client_timeout=timeout)
    await agent.websocket_session(session)


class WebSocketSession:
    """One accepted WebSocket: send text, receive text, answer pings, heartbeat.

    ``run(on_text)`` returns when the connection ends for any reason. ``abort()`` drops the
    connection without a close frame (what the real agent does on restart or timeout).
    """

    def __init__(
        self,
        stream: trio.SSLStream[trio.SocketStream],
        initial: bytes,
        *,
        ping_interval: float = WS_PING_INTERVAL,
        client_timeout: float = WS_CLIENT_TIMEOUT,
    ) -> None:
        self.ping_interval = ping_interval
        self.client_timeout = client_timeout
        self._stream = stream
        self._ws = WSConnection(ConnectionType.SERVER)
        self._initial = initial
        self._send_lock = trio.Lock()
        self._last_heartbeat = trio.current_time()
        self._scope: trio.CancelScope | None = None

    async def send_text(self, message: str) -> None:
        await self._send_event(TextMessage(data=message))

    async def _send_event(self, event: object) -> None:
        async with self._send_lock:
            try:
                data = self._ws.send(event)  # type: ignore[arg-type]
            except LocalProtocolError:
                raise trio.ClosedResourceError from None
            await self._stream.send_all(data)

    def abort(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, on_text: Callable[[str], Awaitable[None]]) -> None:
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeat)
                    await self._read_loop(on_text)
                    nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            if trio.current_time() - self._last_heartbeat > self.client_timeout:
                self.abort()  # no close frame: the client sees an abnormal closure
                return
            await self._send_event(Ping(payload=b"hb"))

    async def _read_loop(self, on_text: Callable[[str], Awaitable[None]]) -> None:
        data = self._initial
        partial = ""
        while True:
            if data:
                try:
                    self._ws.receive_data(data)
                except RemoteProtocolError:
                    return
            for event in self._ws.events():
                if isinstance(event, Ping):
                    self._last_heartbeat = trio.current_time()
                    await self._send_event(event.response())
                elif isinstance(event, Pong):
                    self._last_heartbeat = trio.current_time()
                elif isinstance(event, TextMessage):
                    partial += event.data
                    if event.message_finished:
                        message, partial = partial, ""
                        await on_text(message)
                elif isinstance(event, BytesMessage):
                    continue  # binary frames are ignored
                elif isinstance(event, CloseConnection):
                    await self._send_event(event.response())  # echo code and reason
                    return
            data = bytes(await self._stream.receive_some(65536))
            if not data:
                return
