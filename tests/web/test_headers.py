"""The layers around the whole app: security headers and X-Request-Id on every response
(500s included), the request body limit, and what the public health endpoint tells whom."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.middleware import CONTENT_SECURITY_POLICY, DRAIN_CAP_BYTES

from .conftest import WebRig, assert_envelope

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


def assert_security_headers(response: httpx2.Response, *, static: bool = False) -> None:
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, where
    assert "script-src 'self';" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["referrer-policy"] == "same-origin", where
    assert headers["x-frame-options"] == "DENY", where
    assert headers["x-request-id"], where
    assert "server" not in headers, where
    if not static:
        assert headers["cache-control"] == "no-store", where


async def test_security_headers_on_pages_api_static_and_every_error(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    responses = [
        await client.get("/"),
        await client.get("/hosts"),
        await client.get("/api/v1/hosts"),
        await client.get("/api/v1/health"),
        await client.get("/api/v1/no-such-thing"),
        await client.get("/no-such-page"),
        await client.delete("/api/v1/fleet/summary"),
        await client.post("/api/v1/groups", content=b"x" * (MIB + 1)),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 404, 405, 413]
    for response in responses:
        assert_security_headers(response)
    static = await client.get("/static/app.css")
    assert static.status_code == 200
    assert_security_headers(static, static=True)

    transport = httpx2.ASGITransport(app=web_rig.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        for response in [
            await anon.get("/login"),
            await anon.get("/hosts"),
            await anon.get("/api/v1/hosts"),
        ]:
            assert response.status_code in (200, 303, 401)
            assert_security_headers(response)


async def test_hsts_only_on_https(web_rig: WebRig) -> None:
    transport = httpx2.ASGITransport(app=web_rig.app)
    for base, expected in [("https://testserver", True), ("http://testserver", False)]:
        async with httpx2.AsyncClient(transport=transport, base_url=base) as anon:
            response = await anon.get("/login")
        assert ("strict-transport-security" in response.headers) is expected, base


async def test_unexpected_exception_is_a_500_envelope_with_the_request_id_and_a_logged_traceback(
    web_rig: WebRig, client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"boom-{uuid.uuid4().hex}"

    async def boom(request: Request) -> Response:
        raise RuntimeError(marker)

    # A route of the test's own, so that the failure is a real exception inside the real app.
    web_rig.app.router.routes.append(Route("/api/v1/boom", boom, methods=["GET"]))
    with caplog.at_level(logging.ERROR):
        response = await client.get("/api/v1/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert marker not in response.text
    assert_security_headers(response)
    rid = response.headers["x-request-id"]
    logged = [r for r in caplog.records if r.exc_info and marker in str(r.exc_info[1])]
    assert len(logged) == 1, "the traceback is logged exactly once"
    assert getattr(logged[0], "request_id", None) == rid == error["request_id"]
    assert rid in logged[0].getMessage()


# -- body limit, driven at the ASGI level to see exactly what is read -------------------------


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 443),
    }


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: Any) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])


async def test_declared_body_over_the_limit_is_413_without_reading_a_byte(
    web_rig: WebRig,
) -> None:
    async def receive() -> Any:
        raise AssertionError("the body must not be read")

    recorder = Recorder()
    scope = http_scope(
        "/login",
        [(b"content-type", b"application/x-www-form-urlencoded"),
         (b"content-length", str(64 * MIB).encode())],
    )  # fmt: skip
    await web_rig.app(scope, receive, recorder.send)
    assert recorder.status == 413
    assert recorder.headers[b"connection"] == b"close"
    assert b'"payload_too_large"' in recorder.messages[1]["body"]
    assert recorder.headers[b"x-request-id"].decode() in recorder.messages[1]["body"].decode()


async def test_chunked_body_over_the_limit_is_413_after_reading_at_most_the_drain_cap(
    web_rig: WebRig,
) -> None:
    """Past the limit the body is discarded (read so a client sending it all gets the
    answer), up to DRAIN_CAP_BYTES; then the 413 comes even if the body never ends."""
    chunk = b"x" * 65536
    received = 0

    async def receive() -> Any:
        nonlocal received
        received += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}  # never ends

    recorder = Recorder()
    scope = http_scope(
        "/api/v1/groups",
        [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    )
    await web_rig.app(scope, receive, recorder.send)
    assert recorder.status == 413
    assert MIB < received <= DRAIN_CAP_BYTES + len(chunk)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_bodies_within_the_limit_reach_the_handler_declared_or_chunked(
    client: httpx2.AsyncClient,
) -> None:
    declared = await client.post("/api/v1/groups", json={"name": "declared"})
    assert declared.status_code == 201, declared.text
    streamed = await client.post(
        "/api/v1/groups",
        content=chunks(b'{"name": ', b'"streamed"}'),
        headers={"content-type": "application/json"},
    )
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert streamed.status_code == 201, streamed.text
    names = {group["name"] for group in (await client.get("/api/v1/groups")).json()["groups"]}
    assert {"declared", "streamed"} <= names


async def test_malformed_content_length_is_400(web_rig: WebRig) -> None:
    async def receive() -> Any:
        raise AssertionError("the body must not be read")

    recorder = Recorder()
    await web_rig.app(http_scope("/login", [(b"content-length", b"-5")]), receive, recorder.send)
    assert recorder.status == 400


# -- health -------------------------------------------------------------------------------------


async def test_health_tells_anonymous_callers_only_the_status(web_rig: WebRig) -> None:
    transport = httpx2.ASGITransport(app=web_rig.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        response = await anon.get("/api/v1/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        anon.cookies.set("pm_session", "forged-or-expired")
        assert (await anon.get("/api/v1/health")).json() == {"status": "ok"}


async def test_health_gives_a_session_the_details(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["scheduler"] == "ok"
    assert {"pid", "version", "uptime_s", "host_actors"} <= set(body)


async def test_a_client_gone_mid_body_is_a_debug_line_not_an_error_or_a_500(
    web_rig: WebRig, anonymous: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    sent = Recorder()
    messages = iter(
        [
            {"type": "http.request", "body": b"username=a", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> Any:
        return next(messages)

    scope = http_scope(
        "/login",
        [(b"content-length", b"1000000"),
         (b"content-type", b"application/x-www-form-urlencoded")],
    )  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        await web_rig.app(scope, receive, sent.send)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in sent.messages if m.get("status") == 500] == []
    assert any("disconnected" in r.getMessage() for r in caplog.records)


async def test_a_websocket_upgrade_without_a_session_is_refused_with_headers_and_an_envelope(
    web_rig: WebRig, anonymous: httpx2.AsyncClient
) -> None:
    sent = Recorder()

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "wss", "path": "/api/v1/live", "raw_path": b"/api/v1/live",
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1234),
        "server": ("testserver", 443), "subprotocols": [],
        "headers": [(b"host", b"testserver"), (b"origin", b"https://testserver")],
        "extensions": {"websocket.http.response": {}},
    }  # fmt: skip
    await web_rig.app(scope, receive, sent.send)
    start, body = sent.messages[0], sent.messages[-1]
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    assert headers[b"x-content-type-options"] == b"nosniff"
    rid = headers[b"x-request-id"].decode()
    assert body["type"] == "websocket.http.response.body"
    error = json.loads(body["body"])["error"]
    assert error["code"] == "unauthorized" and error["request_id"] == rid
