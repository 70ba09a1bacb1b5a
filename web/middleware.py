"""The ASGI layers around the whole Starlette app (outside its ServerErrorMiddleware), so they
apply to every response, including 500s and the 413/401 answered before any handler runs:

``SecurityHeadersMiddleware`` → ``RequestIdMiddleware`` → ``BodyLimitMiddleware`` → Starlette.

- Security headers: a strict Content-Security-Policy (no inline script or style), nosniff,
  ``Referrer-Policy: same-origin``, ``X-Frame-Options: DENY``, HSTS on HTTPS, ``Cache-Control:
  no-store`` on everything but static files; any ``server`` header is dropped.
- Request id: ``X-Request-Id`` on every response and in ``scope["state"]["request_id"]`` (the
  error envelope repeats it). An exception escaping the app is logged here once, with its
  traceback and the request id; if no response was started, a 500 envelope is sent.
- Client gone: ``DisconnectMiddleware`` (the first of the app's own middleware, inside
  Starlette's ServerErrorMiddleware) ends a request whose client went away mid-body
  (``ClientDisconnect``) or mid-answer (``trio.BrokenResourceError``) with one debug line: no
  500 answer to nobody, no error log.
- Body limit: a request body over ``max_bytes`` is answered ``413`` before it is buffered: at
  once from ``Content-Length``, or, for a chunked body, as soon as the bytes received pass the
  limit (chunked bodies are read into memory up to the limit, then replayed to the app).
- Early answers: an answer decided before the request body was read (401, 403, 415 from the
  headers; 413) is sent only after the rest of the body was read and discarded: a client that
  sends its whole body before reading (``requests``, ``curl``) would otherwise have its
  connection closed under it (TLS "EOF occurred in violation of protocol", a reset) and never
  see the answer. A body within the limit is drained whole and the connection stays usable; a
  413's body is drained up to ``DRAIN_CAP_BYTES`` (not at all for a client waiting for ``100
  Continue``, which Hypercorn does not send it), then the answer carries ``connection: close``.
"""

from __future__ import annotations

import json
import logging
import uuid

import trio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# How much of a too-large body is read (and discarded) before the 413, so that a client that
# sends it all before reading gets the answer; a larger one is answered at once and closed.
DRAIN_CAP_BYTES = 8 * 1024 * 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000")
# A WebSocket upgrade refused with an HTTP answer (the ASGI websocket.http.response extension)
# carries the same headers as any other response.
_RESPONSE_STARTS = frozenset({"http.response.start", "websocket.http.response.start"})
_REPLACED = frozenset({b"server", b"cache-control"}) | {name for name, _ in _SECURITY_HEADERS}


def security_headers(*, https: bool) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries (for answers made outside the app, e.g. the
    listener's own 400s)."""
    return [*_SECURITY_HEADERS, *([_HSTS] if https else []), (b"cache-control", b"no-store")]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = list(_SECURITY_HEADERS)
        if scope.get("scheme") in ("https", "wss"):
            extra.append(_HSTS)
        static = str(scope.get("path", "")).startswith("/static/")
        dropped = _REPLACED - {b"cache-control"} if static else _REPLACED

        async def send_with_headers(message: Message) -> None:
            if message["type"] in _RESPONSE_STARTS:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in dropped
                ]
                headers += extra
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DisconnectMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except (ClientDisconnect, trio.BrokenResourceError):
            log.debug(
                "client disconnected during %s %s", scope.get("method", ""), scope.get("path", "")
            )


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] in _RESPONSE_STARTS:
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.accept":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error(
                "unhandled error in %s %s (request %s)",
                scope.get("method", "WEBSOCKET"),
                scope.get("path", ""),
                rid,
                exc_info=exc,
                extra={"request_id": rid},
            )
            if scope["type"] == "http" and not started:
                await send_error(
                    scope, send_with_id, 500, "internal_error", "internal error; see the server log"
                )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(scope, send, 400, "bad_request", "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                if int(length) <= DRAIN_CAP_BYTES and not _expects_continue(scope):
                    await _drain(receive, DRAIN_CAP_BYTES)
                await self._too_large(scope, send)
                return
            if int(length) == 0:
                await self.app(scope, receive, send)
                return
            await _draining_early_answers(self.app, scope, receive, send, self.max_bytes)
            return
        if _header(scope, b"transfer-encoding") is None:
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False) and not _expects_continue(scope):
                    await _drain(receive, DRAIN_CAP_BYTES - size)
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await send_error(
            scope,
            send,
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes (server.max_body_bytes)",
            close=True,
        )


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and discard the rest of the request body, at most ``limit`` more bytes; whether
    it was all read (False: the client went away, or more than ``limit`` remain)."""
    read = 0
    while read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return read <= limit
    return False


def _expects_continue(scope: Scope) -> bool:
    return (_header(scope, b"expect") or "").lower() == "100-continue"


async def _draining_early_answers(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, max_bytes: int
) -> None:
    """Run ``app`` on a request whose declared body is within the limit; if it answers before
    reading all of it (a 401, 403 or 415 decided from the headers), read and discard the rest
    first: the client may be sending it all before reading, and closing the connection under
    it loses the answer. Were the body not read, Hypercorn would not read that connection
    again, so an answer that still finds it unread (the client went away) says ``connection:
    close``."""
    received = False

    async def tracked_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            received = True
        return message

    async def draining_send(message: Message) -> None:
        nonlocal received
        if message["type"] == "http.response.start" and not received:
            received = await _drain(receive, max_bytes)  # h11 stops at the Content-Length
        if message["type"] == "http.response.start" and not received:
            headers = [
                (name, value)
                for name, value in message.get("headers", [])
                if name.lower() != b"connection"
            ]
            headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await send(message)

    await app(scope, tracked_receive, draining_send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1")).strip()
    return None


async def deny_websocket(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Refuse a WebSocket upgrade with an HTTP answer in the error envelope (headers and
    request id added by the layers above); a plain close if the server cannot send one."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 4000 + status, "reason": message})
        return
    rid = str(scope.get("state", {}).get("request_id", ""))
    body = json.dumps(
        {"error": {"code": code, "message": message, "details": None, "request_id": rid}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, *, close: bool = False
) -> None:
    """Answer with the API's error envelope (``web.errors``) from ASGI middleware."""
    rid = str(scope.get("state", {}).get("request_id", ""))
    body = json.dumps(
        {"error": {"code": code, "message": message, "details": None, "request_id": rid}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
