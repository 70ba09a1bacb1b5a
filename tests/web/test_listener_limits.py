"""The listener's limits against clients that hold connections without finishing a request
(issue 9 review): a deadline for a request's body, a cap on concurrent connections, and an
accept-error log that cannot flood."""

from __future__ import annotations

import json
import logging
import resource
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from web.middleware import CONTENT_SECURITY_POLICY, BodyLimitMiddleware
from web.server import WebListener, _RateLimitedLog, connection_cap, serve_web

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


async def read_body_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body before answering (as a form handler does)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


@asynccontextmanager
async def serving(pki: Pki, app: Any = read_body_app, **limits: Any) -> AsyncIterator[int]:
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path, **limits)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_web, app, listener, stop.wait))
        yield int(urls[0].rsplit(":", 1)[1])
        stop.set()


async def connect(pki: Pki, port: int) -> trio.SSLStream[trio.SocketStream]:
    ctx = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
    ctx.set_alpn_protocols(["http/1.1"])
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), ctx, server_hostname="localhost"
    )
    await stream.do_handshake()
    return stream


async def closed_by_server(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


HEAD = b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n"


async def test_a_request_body_not_complete_within_request_timeout_is_cut(pki: Pki) -> None:
    async with serving(pki, request_timeout_s=0.5) as port:
        stream = await connect(pki, port)
        await stream.send_all(HEAD + b"x")  # then nothing more, as a slowloris body
        with trio.fail_after(10):  # without a deadline the server waits for ever
            await closed_by_server(stream)
        await trio.aclose_forcefully(stream)


async def test_a_complete_body_within_request_timeout_is_answered(pki: Pki) -> None:
    async with serving(pki, request_timeout_s=5) as port:
        stream = await connect(pki, port)
        await stream.send_all(
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
            b"Connection: close\r\n\r\nabc"
        )
        with trio.fail_after(10):
            assert (await closed_by_server(stream)).startswith(b"HTTP/1.1 200")
        await trio.aclose_forcefully(stream)


async def test_connections_beyond_max_connections_are_closed_at_accept_and_freed_on_close(
    pki: Pki,
) -> None:
    async with serving(pki, max_connections=2) as port:
        held = [await connect(pki, port), await connect(pki, port)]
        with trio.fail_after(10):
            with pytest.raises((trio.BrokenResourceError, ssl.SSLError, OSError)):
                extra = await connect(pki, port)
                await extra.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert await extra.receive_some(65536) == b""
                raise trio.BrokenResourceError  # closed without an answer: refused
            await trio.aclose_forcefully(held.pop())
            # The freed slot is counted once the server sees the close; retry until then.
            answer = b""
            while not answer:
                await trio.testing.wait_all_tasks_blocked()
                try:
                    fresh = await connect(pki, port)
                    await fresh.send_all(
                        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    )
                    answer = await closed_by_server(fresh)
                except trio.BrokenResourceError:
                    continue  # still refused: the server has not seen the close yet
                await trio.aclose_forcefully(fresh)
        assert answer.startswith(b"HTTP/1.1 200")
        for stream in held:
            await trio.aclose_forcefully(stream)


def test_the_accept_error_log_lets_one_record_through_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    limiter = _RateLimitedLog(interval_s=10, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("trio.serve_listeners", logging.ERROR, "", 0, msg, None, None)

    passed = [limiter.filter(record(f"accept failed {i}")) for i in range(100)]
    assert passed.count(True) == 1
    now[0] = 10.0
    last = record("accept failed again")
    assert limiter.filter(last)
    assert "99 similar messages suppressed" in last.getMessage()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    ],
)
async def test_requests_hypercorn_cannot_parse_get_a_400_envelope_with_our_headers(
    pki: Pki, request_bytes: bytes
) -> None:
    async with serving(pki) as port:
        stream = await connect(pki, port)
        await stream.send_all(request_bytes)
        with trio.fail_after(10):
            answer = await closed_by_server(stream)
        await trio.aclose_forcefully(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"]
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert error["request_id"] == headers["x-request-id"]


async def test_a_declared_body_over_the_limit_gets_413_without_100_continue(pki: Pki) -> None:
    app = BodyLimitMiddleware(read_body_app, 1000)
    async with serving(pki, app, max_body_bytes=1000) as port:
        stream = await connect(pki, port)
        await stream.send_all(
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(10):
            answer = await closed_by_server(stream)
        await trio.aclose_forcefully(stream)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"HTTP/1.1 100" not in answer


async def test_a_body_within_the_limit_still_gets_100_continue(pki: Pki) -> None:
    app = BodyLimitMiddleware(read_body_app, 1000)
    async with serving(pki, app, max_body_bytes=1000) as port:
        stream = await connect(pki, port)
        await stream.send_all(
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        with trio.fail_after(10):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 100")
            await stream.send_all(b"abc")
            answer = await closed_by_server(stream)
        await trio.aclose_forcefully(stream)
    assert b"HTTP/1.1 200" in answer


def test_served_connections_are_capped_at_half_the_open_file_limit() -> None:
    assert connection_cap(1000, 1024) == 512
    assert connection_cap(1000, 20000) == 1000
    assert connection_cap(1000, resource.RLIM_INFINITY) == 1000
    assert connection_cap(1000, 1) == 1
