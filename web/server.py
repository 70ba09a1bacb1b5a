"""The web listener: Hypercorn's HTTP/1.1 protocol over TLS 1.3, inside the caller's nursery.

Three layers keep a request from taking the process down (issue 9):

- **HTTP/1.1 only.** Hypercorn 0.18's HTTP/2 protocol raises inside the worker on a large POST
  the app answers before reading (no upstream fix), so ALPN offers only ``http/1.1``, an HTTP/2
  prior-knowledge preface closes the connection, and ``Upgrade: h2c`` is ignored.
- **Each connection is contained.** An unexpected exception in one connection is logged with its
  traceback and closes that connection only.
- **No client holds a connection for free.** A request head must arrive within Hypercorn's
  keep-alive timeout (5 s), its body within ``request_timeout_s`` of the head (else the
  connection is closed; WebSockets, past their upgrade, have no such deadline), at most
  ``max_connections`` connections are served at once (more are closed at accept), and the
  accept-error log (file-descriptor exhaustion) is rate-limited.
- **The listener is supervised.** If the server itself fails after start-up, the failure is
  logged once and the server restarted on the same listening socket after an exponential,
  capped delay (reset after a healthy period). Start-up errors (port taken) still raise
  ``ListenError``; cancellation and the shutdown trigger are never "failures".

Hypercorn's ``serve`` hard-codes its connection class, so ``_serve_once`` is its trio worker
loop (``hypercorn.trio.run.worker_serve``) with our connection class and reused sockets; the
version is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import json
import logging
import resource
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from math import inf
from pathlib import Path
from typing import Protocol

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import (
    ShutdownError,
    parse_socket_addr,
    raise_shutdown,
    repr_socket_addr,
    wrap_app,
)
from starlette.types import ASGIApp

from .middleware import security_headers

log = logging.getLogger(__name__)

ShutdownTrigger = Callable[[], Awaitable[None]]


class _TLS13Config(HypercornConfig):
    """Hypercorn hard-codes TLS 1.2 as the minimum; we allow 1.3 only."""

    prebuilt: ssl.SSLContext | None = None  # WebListener.ssl_context
    request_timeout_s: float = 60.0  # WebListener.request_timeout_s
    max_connections: int = 1000  # WebListener.max_connections
    max_body_bytes: int | None = None  # WebListener.max_body_bytes

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self.prebuilt is not None:
            return self.prebuilt
        ctx: ssl.SSLContext | None = super().create_ssl_context()
        if ctx is not None:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx


@dataclass(frozen=True)
class WebListener:
    bind: str
    certfile: Path | None  # None = plain HTTP (only behind a TLS-terminating proxy)
    keyfile: Path | None
    graceful_timeout_s: float = 5.0
    restart_min_s: float = 0.5
    restart_max_s: float = 30.0
    healthy_after_s: float = 60.0  # a run this long resets the restart delay
    request_timeout_s: float = 60.0  # a request body must be complete this long after its head
    max_connections: int = 1000  # connections served at once; more are closed at accept
    # The app's body limit: a request declaring more gets no "100 Continue" (only the 413).
    max_body_bytes: int | None = None
    # A context to serve with instead of one built from the files: the certificate service
    # loads a renewed certificate into it, and new handshakes use it without a restart.
    ssl_context: ssl.SSLContext | None = None


def restart_delay(failures: int, minimum: float, maximum: float) -> float:
    """Delay before restart number ``failures`` (1-based): doubling from ``minimum``, capped.

    No jitter: there is one listener per process, so there is no herd to spread.
    """
    return float(min(maximum, minimum * 2 ** max(0, failures - 1)))


def connection_cap(configured: int, open_files: int) -> int:
    """Connections served at once: ``server.max_connections``, but at most half the process's
    open-file limit (the other half is for agents, the database and files): past the limit,
    accepting fails and the whole server stalls, not only the extra clients."""
    if open_files == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, open_files // 2))


class ServeOnce(Protocol):
    """Serve until the shutdown trigger returns; report the bound URLs through ``started``."""

    async def __call__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        sockets: Sockets,
        shutdown_trigger: ShutdownTrigger,
        *,
        task_status: trio.TaskStatus[list[str]] = ...,
    ) -> None: ...


def hypercorn_config(listener: WebListener) -> _TLS13Config:
    cfg = _TLS13Config()
    cfg.bind = [listener.bind]
    cfg.graceful_timeout = listener.graceful_timeout_s
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.alpn_protocols = ["http/1.1"]
    cfg.include_server_header = False
    cfg.ssl_handshake_timeout = 10
    cfg.request_timeout_s = listener.request_timeout_s
    cfg.max_connections = connection_cap(
        listener.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    )
    cfg.max_body_bytes = listener.max_body_bytes
    if listener.certfile is not None and listener.keyfile is not None:
        cfg.certfile = str(listener.certfile)
        cfg.keyfile = str(listener.keyfile)
        cfg.prebuilt = listener.ssl_context
    return cfg


async def serve_web(
    app: ASGIApp,
    listener: WebListener,
    shutdown_trigger: ShutdownTrigger,
    *,
    serve_once: ServeOnce | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; reports the bound URLs through ``started``.

    Raises ``ListenError`` if the socket cannot be opened. After start-up, a failure of the
    server is logged and the server restarted (see the module docstring); this returns only
    when the shutdown trigger has fired and in-flight requests got ``graceful_timeout_s``.
    ``serve_once`` replaces the server run (tests inject a failing one).
    """
    run = serve_once or _serve_once
    cfg = hypercorn_config(listener)
    if cfg.max_connections < listener.max_connections:
        log.warning(
            "serving at most %d connections at once, not server.max_connections = %d: the "
            "open-file limit is %d (raise it, e.g. LimitNOFILE= in the systemd unit)",
            cfg.max_connections, listener.max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )  # fmt: skip
    if cfg.ssl_enabled is False:
        log.warning(
            "serving plain HTTP on %s: only do this behind a TLS-terminating reverse proxy",
            listener.bind,
        )
    try:
        sockets = cfg.create_sockets()
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {listener.bind}: {exc.strerror or exc} (set server.bind or --bind)"
        ) from None
    wrapped = wrap_app(app, cfg.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    failures = 0
    reporter: _Started | None = _Started(task_status)
    # trio logs every failed accept (EMFILE near the open-file limit) every 100 ms.
    accept_log = logging.getLogger("trio.serve_listeners")
    accept_limiter = _RateLimitedLog()
    accept_log.addFilter(accept_limiter)
    try:
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            sock.listen(cfg.backlog)
        while True:
            started_at = trio.current_time()
            try:
                # Each run gets duplicates: closing them at its end leaves ours listening.
                await run(wrapped, cfg, _duplicate(sockets), shutdown_trigger,
                          task_status=reporter or _Started(trio.TASK_STATUS_IGNORED))  # fmt: skip
                return  # the shutdown trigger fired
            except Exception as exc:
                if reporter is not None and not reporter.done:
                    raise
                if trio.current_time() - started_at >= listener.healthy_after_s:
                    failures = 0
                failures += 1
                delay = restart_delay(failures, listener.restart_min_s, listener.restart_max_s)
                log.error(
                    "web server failed (%s); restarting it in %.3g s (failure %d in a row)",
                    _summary(exc),
                    delay,
                    failures,
                    exc_info=exc,
                )
            reporter = None
            with trio.move_on_after(delay):
                await shutdown_trigger()
                return
    finally:
        accept_log.removeFilter(accept_limiter)
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            sock.close()


class _RateLimitedLog(logging.Filter):
    """Lets one record through per ``interval_s``; the next one says how many were dropped."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self.last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            self.suppressed += 1
            return False
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} similar messages suppressed)"
            self.suppressed = 0
        self.last = now
        return True


class _ConnectionGate:
    """Counts served connections; beyond the limit a new one is closed at accept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refusals = _RateLimitedLog()

    async def serve(
        self, handler: Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]],
        stream: trio.SSLStream[trio.SocketStream],
    ) -> None:  # fmt: skip
        if self.active >= self.limit:
            record = logging.LogRecord(
                log.name, logging.WARNING, __file__, 0,
                "connection refused at accept: %d connections open (server.max_connections)",
                (self.active,), None,
            )  # fmt: skip
            if self.refusals.filter(record):
                log.handle(record)
            await trio.aclose_forcefully(stream)
            return
        self.active += 1
        try:
            await handler(stream)
        finally:
            self.active -= 1


def _summary(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _duplicate(sockets: Sockets) -> Sockets:
    return Sockets(
        [s.dup() for s in sockets.secure_sockets],
        [s.dup() for s in sockets.insecure_sockets],
        [],
    )


async def _serve_once(
    app: AppWrapper,
    config: HypercornConfig,
    sockets: Sockets,
    shutdown_trigger: ShutdownTrigger,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.run.worker_serve`` without QUIC, statsd or max_requests, with
    ``_Connection`` as the connection handler and the caller's (listening) sockets."""
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            ssl_context = config.create_ssl_context()
            listeners: list[trio.SSLListener[trio.SocketStream] | trio.SocketListener] = []
            binds = []
            for sock in sockets.secure_sockets:
                listeners.append(
                    trio.SSLListener(
                        trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                        ssl_context,  # type: ignore[arg-type]
                        https_compatible=True,
                    )
                )
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    connection = partial(
                        _Connection, app, config, context, ConnectionState(lifespan_state.copy())
                    )
                    gate = _ConnectionGate(getattr(config, "max_connections", 1000))
                    handler = partial(gate.serve, connection)
                    nursery.start_soon(
                        partial(
                            trio.serve_listeners, handler, listeners, handler_nursery=server_nursery
                        )  # fmt: skip
                    )
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


class _Http2Refused(Exception):
    """The client sent the HTTP/2 connection preface: we serve HTTP/1.1 only."""


class _Http11Protocol(H11Protocol):
    async def _check_protocol(self, event: h11.Request) -> None:
        # Upgrade: h2c is ignored (a server may ignore Upgrade; RFC 9110 §7.8).
        if event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            raise _Http2Refused
        # Hypercorn sends "100 Continue" as soon as the head is parsed, before the app decides;
        # a body the app will refuse (413) must not be invited.
        limit = getattr(self.config, "max_body_bytes", None)
        connection = self.connection
        if limit is not None and isinstance(connection, h11.Connection):
            length = dict(event.headers).get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                connection.client_is_waiting_for_100_continue = False

    async def _send_error_response(self, status_code: int) -> None:
        """What Hypercorn answers itself (a request h11 cannot parse: a malformed request
        line, header or ``Content-Length``) in the app's error envelope, with its headers."""
        rid = uuid.uuid4().hex
        message = "malformed HTTP request" if status_code == 400 else "request refused"
        code = "bad_request" if status_code == 400 else "error"
        body = json.dumps(
            {"error": {"code": code, "message": message, "details": None, "request_id": rid}}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", rid.encode()),
            *security_headers(https=self.ssl),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        log.debug("answered %d to an unparsable request (request %s)", status_code, rid)


class _Connection(TCPServer):
    """One client connection: ``TCPServer.run`` speaking HTTP/1.1 only, failures contained."""

    async def run(self) -> None:
        peer = "?"
        try:
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return  # handshake failed or too slow: nothing to serve
            sock = self.stream.transport_stream.socket
            tls = True
        except AttributeError:  # not TLS
            sock = self.stream.socket
            tls = False
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            peer = repr_socket_addr(sock.family, sock.getpeername())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = _Http11Protocol(  # type: ignore[assignment]
                    self.app, self.config, self.context, task_group,
                    ConnectionState(self.state), tls, client, server, self.protocol_send,
                )  # fmt: skip
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except* OSError:
            pass  # the peer went away
        except* _Http2Refused:
            log.debug("HTTP/2 preface from %s refused (HTTP/1.1 only); connection closed", peer)
        except* Exception as group:
            log.error("connection from %s failed; closed it", peer, exc_info=group)
        finally:
            await self._close()

    async def _read_data(self) -> None:
        """``TCPServer._read_data`` plus a deadline for a request's body: it must be complete
        ``request_timeout_s`` after its head, else the connection is closed. The head itself is
        bounded by the keep-alive (idle) timeout; an upgraded WebSocket has no deadline."""
        timeout: float = getattr(self.config, "request_timeout_s", inf)
        body_deadline = inf
        while True:
            try:
                with trio.fail_at(body_deadline):
                    data = await self.stream.receive_some(MAX_RECV)
            except trio.TooSlowError:
                log.debug("request body not complete within %.3g s; connection closed", timeout)
                break
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
            connection = getattr(self.protocol, "connection", None)
            if getattr(connection, "their_state", None) is h11.SEND_BODY:
                if body_deadline == inf:
                    body_deadline = trio.current_time() + timeout
            else:
                body_deadline = inf
        await self.protocol.handle(Closed())


class ListenError(Exception):
    """The web listener could not be opened (port taken, address not local, …)."""


class _Started:
    def __init__(self, task_status: trio.TaskStatus[list[str]]) -> None:
        self.task_status = task_status
        self.done = False

    def started(self, value: list[str] | None = None) -> None:
        self.done = True
        self.task_status.started(value or [])
