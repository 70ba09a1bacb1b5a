"""No request can take `patch-manager serve` down (issue 9): HTTP/2 abuse, oversized bodies,
protocol garbage and a slowloris against the real process over TLS, while its actors keep
polling a simulated agent."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import httpx2
import psycopg
import pytest
import trio

from simulator import Fleet, FleetSpec
from storage import insert_host

from ..conftest import fleet_addresses

pytestmark = pytest.mark.timeout(150)

KIB = 1024
CONF = """
[server]
max_body_bytes = 65536
[polling]
health_interval_s = 10
patch_interval_s = 7200
connect_timeout_s = 2.0
"""


def conninfo(data_dir: Path) -> str:
    return f"host={data_dir}/postgres/run user=postgres dbname=patch_manager"


def port_of(server: Any) -> int:
    return int(server.url.rstrip("/").rsplit(":", 1)[1])


async def health(server: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(verify=server.ssl_context(), timeout=10) as client:
        return await client.get(server.url + "api/v1/health")


async def tls_connect(server: Any, alpn: list[str]) -> trio.SSLStream[trio.SocketStream]:
    ctx = server.ssl_context()
    ctx.set_alpn_protocols(alpn)
    tcp = await trio.open_tcp_stream("127.0.0.1", port_of(server))
    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    await stream.do_handshake()
    return stream


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass
    return received


async def h2_post(server: Any, path: str, *, body_size: int, prior_knowledge: bool) -> str | None:
    """An HTTP/2 POST with a body the server answers before reading (what crashed Hypercorn's
    h2 protocol): negotiated by ALPN, or sent with prior knowledge on an http/1.1 connection.
    Returns the ALPN protocol the server chose."""
    stream = await tls_connect(server, ["http/1.1"] if prior_knowledge else ["h2", "http/1.1"])
    chosen: str | None = stream.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "POST"), (":path", path), (":scheme", "https"),
         (":authority", "localhost"), ("content-type", "application/json")],
    )  # fmt: skip
    body = b"x" * body_size
    sent = 0
    # Up to the initial flow-control window, like a client that does not wait for the answer.
    while sent < body_size and conn.local_flow_control_window(stream_id) > 0:
        size = min(16 * KIB, body_size - sent, conn.local_flow_control_window(stream_id))
        conn.send_data(stream_id, body[sent : sent + size])
        sent += size
    try:
        await stream.send_all(conn.data_to_send())
        with trio.move_on_after(5):
            await read_until_closed(stream)
    except trio.BrokenResourceError:
        pass  # the server closed the connection while we were sending
    finally:
        await trio.aclose_forcefully(stream)
    return chosen


async def http11_request(server: Any, head: bytes, body: bytes = b"") -> bytes:
    """Send a raw HTTP/1.1 request; return the status line and headers of the answer."""
    stream = await tls_connect(server, ["http/1.1"])
    try:
        await stream.send_all(head + body)
        received = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in received:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break  # closed without a TLS close_notify: fine for garbage
                if not chunk:
                    break
                received += chunk
        return received.split(b"\r\n\r\n", 1)[0]
    finally:
        await trio.aclose_forcefully(stream)


async def start_polled_server(start_server: Any, nursery: trio.Nursery, tmp_dir: Path) -> Any:
    """The server plus one simulated agent it polls every 10 s."""
    server = await start_server(CONF)
    await server.wait_ready()
    fleet = Fleet(
        server.data_dir / "ca",
        tmp_dir / "sim",
        FleetSpec(count=1, base_address=fleet_addresses(1), time_scale=0.02),
    )
    await nursery.start(fleet.run)
    agent = fleet.agents[0]

    def register() -> None:
        with psycopg.connect(conninfo(server.data_dir), autocommit=True) as conn:
            insert_host(conn, name=agent.address, address=agent.address, port=agent.port)

    await trio.to_thread.run_sync(register)
    await agent.wait_requests(1)  # the actor polls it
    server.agent = agent
    return server


async def assert_alive_and_polling(server: Any) -> None:
    """Health answers, the agent is polled again, nothing was logged as an error, and the
    server stops cleanly on SIGTERM."""
    assert server.process.returncode is None, "the server process ended"
    response = await health(server)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    before = server.agent.requests_served
    await server.agent.wait_requests(before + 1)  # the next poll (health_interval_s = 10)
    failures = [e for e in server.logs if e.get("level") in ("error", "critical")]
    assert failures == [], failures
    server.process.send_signal(signal.SIGTERM)  # and it still shuts down cleanly
    assert await server.process.wait() == 0


async def test_http2_posts_of_64_kib_leave_health_answering_and_actors_polling(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(120):
        server = await start_polled_server(start_server, nursery, tmp_dir)
        for path in ["/api/v1/hosts", "/login", "/api/v1/health"]:
            for prior_knowledge in (False, True):
                chosen = await h2_post(
                    server, path, body_size=64 * KIB + 1, prior_knowledge=prior_knowledge
                )
                assert chosen == "http/1.1", "the server must not negotiate HTTP/2"
                assert (await health(server)).status_code == 200
        await assert_alive_and_polling(server)


async def test_oversized_bodies_are_413_before_they_are_sent(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(120):
        server = await start_polled_server(start_server, nursery, tmp_dir)
        # 64 MiB announced, not one byte of it sent: the answer comes at once.
        head = await http11_request(
            server,
            b"POST /api/v1/hosts HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n",
        )
        assert head.startswith(b"HTTP/1.1 413"), head
        # server.max_body_bytes = 65536 in the configuration: just over it, chunked.
        chunk = b"x" * (64 * KIB + 1)
        head = await http11_request(
            server,
            b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n",
        )
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"x-request-id" in head.lower()
        assert b"server:" not in head.lower()
        await assert_alive_and_polling(server)


def client_hello() -> bytes:
    """The first flight of a real TLS 1.3 handshake."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_protocol_garbage_and_500_idle_connections_leave_health_answering(
    start_server: Any, nursery: trio.Nursery, tmp_dir: Path
) -> None:
    with trio.fail_after(140):
        server = await start_polled_server(start_server, nursery, tmp_dir)
        port = port_of(server)
        hello = client_hello()
        rng = os.urandom

        async def raw(payload: bytes) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await stream.send_all(payload)
                with trio.move_on_after(5):
                    await read_until_closed(stream)
            except trio.BrokenResourceError:
                pass
            finally:
                await trio.aclose_forcefully(stream)

        # Random bytes, truncated handshakes, a handshake followed by garbage.
        for payload in [rng(1), rng(100), rng(70_000), hello[:5], hello[: len(hello) // 2],
                        hello + rng(2000), b"\x16\x03\x01\xff\xff" + rng(64)]:  # fmt: skip
            await raw(payload)
        # Valid TLS, then not HTTP; an h2c upgrade; an HTTP/2 preface after a valid request.
        for head in [
            rng(5000),
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
        ]:
            answer = await http11_request(server, head)
            assert not answer.startswith(b"HTTP/1.1 101"), "no protocol switch"
            assert not answer.startswith(b"HTTP/1.1 5"), answer
        assert (await health(server)).status_code == 200

        # A slowloris: 500 connections held open, half before TLS, half mid-request.
        held: list[trio.abc.Stream] = []

        async def hold(index: int, limiter: trio.CapacityLimiter) -> None:
            async with limiter:
                tcp = await trio.open_tcp_stream("127.0.0.1", port)
                if index % 2:
                    held.append(tcp)
                    await tcp.send_all(hello[:20])
                    return
                ctx = server.ssl_context()
                stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
                await stream.do_handshake()
                await stream.send_all(b"GET /api/v1/health HTTP/1.1\r\nHost: local")
                held.append(stream)

        limiter = trio.CapacityLimiter(50)
        async with trio.open_nursery() as openers:
            for index in range(500):
                openers.start_soon(hold, index, limiter)
        assert len(held) == 500
        latencies = []
        for _ in range(20):
            started = trio.current_time()
            assert (await health(server)).status_code == 200
            latencies.append(trio.current_time() - started)
        assert max(latencies) < 2.0, latencies
        for stream in held:
            await trio.aclose_forcefully(stream)
        await assert_alive_and_polling(server)
