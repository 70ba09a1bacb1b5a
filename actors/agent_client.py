"""A typed client for one Linux Patch API agent (agent-api.md §3, §5), over mutual TLS 1.3.

Every method either returns a frozen record or raises an ``AgentError`` subclass (see
``agent_errors``). Requests carry the deadlines given at construction; cancellation aborts the
request at once.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import msgspec
import trio
import trio_websocket

from storage import package_name_problem, package_version_problem

from .agent_errors import (
    AdmissionRefused,
    AgentCertificateInvalid,
    AgentError,
    AgentRequestError,
    AgentTimeout,
    ConnectionClosed,
    NotWhitelisted,
    ProtocolError,
    RateLimited,
    TLSRejected,
    TransportError,
    Unreachable,
)
from .agent_records import (
    Health,
    JobAccepted,
    JobEvent,
    JobInfo,
    Package,
    PatchList,
    PatchPoll,
    ServiceStatus,
    SystemInfo,
    invalid_text,
    is_job_id,
    parse_health,
    parse_job,
    parse_job_accepted,
    parse_jobs,
    parse_package,
    parse_package_status,
    parse_packages,
    parse_patches,
    parse_service,
    parse_system_info,
    parse_ws_message,
    without_nul,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
KEEPALIVE_EXPIRY = 10.0  # seconds an idle agent connection is kept: below the agent's 15 s

ADMISSION_CODES = frozenset(
    {
        "QUEUE_FULL", "ADMISSION_FROZEN", "ADMISSION_CLOSED", "SELF_UPDATE_IN_PROGRESS",
        "SELF_UPDATE_BLOCKED", "REBOOT_BLOCKED", "PACKAGE_DB_MUTATION_IN_PROGRESS",
    }
)  # fmt: skip
USER_AGENT = "linux-patch-manager/0.1"
# Answers at least this large (a host's package list: ~200 KB for 1,200 packages) that the
# typed fast paths (``_fast_packages``, ``_raw_data``) do not take are decoded and parsed in a
# worker thread (json + Python parsing; the caller's ingest slot bounds how many at once). The
# fast paths run on the event loop: msgspec's C decoder holds the GIL, so a thread freed the
# loop hardly at all (0.7 vs 1.0 ms for 1,200 packages) and cost ~15 KB per actor at rest.
# Small answers stay on the loop (a thread hop costs more than they do).
OFF_LOOP_BYTES = 32 * 1024


def decode_json(content: bytes) -> Any:
    """``json.loads(content)``, by msgspec's decoder (about 2x faster on package lists).
    What msgspec refuses (NaN and Infinity, a BOM, UTF-16, floats out of range such as 1e400,
    escaped lone surrogates, invalid UTF-8) is decoded again by ``json``, so the result (or
    the ValueError) is exactly the standard library's: 1e400 is inf, and a lone surrogate
    comes back in the string as json gives it. Large integers (up to json's 4,300 digits)
    msgspec decodes itself, to the same int. JSON nested too deeply for either decoder (a
    RecursionError) is a ValueError."""
    return _decode_json(content)[0]


def _decode_json(content: bytes) -> tuple[Any, bool]:
    """``decode_json(content)``, and whether json decoded it (msgspec refused it): only
    then can a string hold a lone surrogate."""
    try:
        try:
            return msgspec.json.decode(content), False
        except msgspec.MsgspecError:
            return json.loads(content), True
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def check_package_name(name: str) -> str:
    """``name`` if the agent accepts it (the one rule in ``storage.packages``), else ValueError."""
    if package_name_problem(name) is not None:
        raise ValueError(f"invalid package name {name!r}")
    return name


def check_version(version: str) -> str:
    """``version`` if the agent accepts it, else ValueError."""
    if package_version_problem(version) is not None:
        raise ValueError(f"invalid package version {version!r}")
    return version


@dataclass(frozen=True)
class PatchSelection:
    """Which patches to apply. ``ALL`` must be asked for by name, never reached by accident."""

    packages: tuple[str, ...] | None

    @classmethod
    def all(cls) -> PatchSelection:
        return cls(None)

    @classmethod
    def only(cls, names: Sequence[str]) -> PatchSelection:
        if isinstance(names, str) or not names:
            raise ValueError("an explicit patch selection needs at least one package name")
        return cls(tuple(check_package_name(n) for n in names))


class ConnectionRamp:
    """A fleet-wide limit on agent connections being *opened* at once (TCP connect + TLS
    handshake); requests on open connections never wait for it.

    Cold-starting thousands of hosts queues here instead of opening thousands of handshakes at
    once, which on a small machine makes them time out (self-inflicted "unreachable" hosts).
    The wait for a slot is not part of any request deadline; the handshake itself is.
    """

    PER_CPU = 16

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a connection ramp needs at least one slot")
        self.limit = limit
        self._limiter = trio.CapacityLimiter(limit)
        self.opened = 0  # connections opened through the ramp
        self.waited = 0  # of which had to wait for a slot
        self.peak = 0  # most slots in use at once

    @classmethod
    def for_this_machine(cls, configured: int = 0) -> ConnectionRamp:
        """``configured`` slots, or ``PER_CPU`` per CPU when it is 0."""
        return cls(configured or cls.PER_CPU * (os.cpu_count() or 1))

    async def acquire(self, token: object) -> None:
        if self._limiter.available_tokens == 0:
            self.waited += 1
        await self._limiter.acquire_on_behalf_of(token)
        self.opened += 1
        self.peak = max(self.peak, self.in_use)

    def release(self, token: object) -> None:
        self._limiter.release_on_behalf_of(token)

    @property
    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens)


class _RampSlot:
    """The ramp slot one request holds while httpx opens a connection for it (driven by
    httpcore's trace events), released when the handshake ends or the request does."""

    _OPENING = "connection.connect_tcp.started"
    _DONE = frozenset(
        {
            "connection.connect_tcp.failed",
            "connection.start_tls.complete",
            "connection.start_tls.failed",
        }
    )

    def __init__(self, ramp: ConnectionRamp) -> None:
        self.ramp = ramp
        self.held = False

    async def trace(self, name: str, info: Mapping[str, Any]) -> None:
        if name == self._OPENING and not self.held:
            await self.ramp.acquire(self)
            self.held = True
        elif name in self._DONE:
            self.release()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.ramp.release(self)


def _retry_after(headers: httpx2.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(1.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(1.0, when.timestamp() - time.time())


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _has_cause(exc: BaseException, kind: type[BaseException]) -> bool:
    """Is ``kind`` anywhere in the cause chain (looking inside exception groups: trio reports
    a failed connect as an OSError caused by a group of per-address errors)?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        if isinstance(seen, BaseExceptionGroup) and any(
            _has_cause(inner, kind) for inner in seen.exceptions
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _rejection_message(err: ssl.SSLError) -> str:
    reason = (err.reason or str(err)).lower()
    if "certificate_required" in reason or "certificate required" in reason:
        return "the agent requires a client certificate"
    if "revoked" in reason:
        return "the agent rejected our client certificate as revoked"
    if "expired" in reason:
        return "the agent rejected our client certificate as expired"
    if "unknown_ca" in reason or "unknown ca" in reason or "bad_certificate" in reason:
        return "the agent does not trust our client certificate (unknown CA)"
    if "protocol_version" in reason or "version" in reason:
        return "TLS version refused (the agent speaks TLS 1.3 only)"
    return f"TLS failure: {err.reason or err}"


def map_transport_error(host: str, exc: Exception) -> AgentError:
    """Classify an httpx/ssl/socket failure (no HTTP answer) into our hierarchy."""
    if isinstance(exc, httpx2.ConnectTimeout):
        return Unreachable(host, "connect timed out")
    if isinstance(exc, httpx2.PoolTimeout):
        return AgentTimeout(host, "no free connection to the agent in time")
    if isinstance(exc, httpx2.TimeoutException):
        return AgentTimeout(host, "the agent did not answer in time")
    err = _ssl_cause(exc)
    if isinstance(err, ssl.SSLCertVerificationError):
        return AgentCertificateInvalid(
            host, f"the agent's certificate is not acceptable: {err.verify_message or err}"
        )
    if err is not None:
        return TLSRejected(host, _rejection_message(err))
    if isinstance(exc, httpx2.ConnectError):
        if _has_cause(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
            return Unreachable(host, "connection refused")
        return Unreachable(host, f"cannot connect: {exc}")
    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError):
        # Under TLS 1.3 a refused client certificate (or a whitelist drop) shows up as the
        # server hanging up before answering — as does an agent dying mid-request.
        return ConnectionClosed(
            host,
            "connection closed without an answer: client certificate refused or this manager's "
            "IP is not whitelisted",
        )
    return TransportError(host, f"transport failure: {exc}")


PoolKey = tuple[str, int, int]  # address, port, connections at most


class _PerHostTransport(httpx2.AsyncBaseTransport):
    """Dispatches each request to its host's own connection pool (so a host's connection
    errors and its connection limit stay its own)."""

    def __init__(self, pool_for: Callable[[PoolKey], httpx2.AsyncHTTPTransport | None]) -> None:
        self.pool_for = pool_for

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        key = request.extensions.get("pool")
        pool = None if key is None else self.pool_for(key)
        if pool is None:
            raise httpx2.ConnectError("no connection pool for this agent", request=request)
        return await pool.handle_async_request(request)


class AgentTransport:
    """The one agent transport of a manager: a single httpx client over connection pools
    keyed by host (address, port and its per-host connection limit), all with one mTLS
    context and the fleet-wide connection ramp. ``AgentClient``s made with it share it; a
    host's pool is made for its first request and closed when its last client is closed (a
    policy change replaces the client, not the connections).

    Idle connections are closed: every ``keepalive_expiry`` seconds a background task closes
    the pools of hosts without a request for that long (an open TLS connection holds about
    100 KB; hosts are polled minutes apart and the agent drops them after 15 s). A host at
    rest holds no pool at all (an empty one is ~7 KB); its next request makes a new one."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        ramp: ConnectionRamp | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        self.ssl_context = ssl_context
        self.ramp = ramp
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[PoolKey, httpx2.AsyncHTTPTransport] = {}
        self._users: dict[PoolKey, int] = {}
        self._busy: dict[PoolKey, int] = {}  # requests in flight per pool
        self._used: dict[PoolKey, float] = {}  # last request end of pools with connections
        self._sweeping = False
        self._closed = False
        self.idle_closed = 0  # pools whose idle connections were closed
        self.client = httpx2.AsyncClient(
            transport=_PerHostTransport(self._pool_for),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )

    @property
    def pools(self) -> int:
        """Hosts with a client on this transport."""
        return len(self._users)

    @property
    def open_pools(self) -> int:
        """Connection pools held (hosts used within ``keepalive_expiry``)."""
        return len(self._pools)

    def open_connections(self) -> int:
        """Connections held open over every pool (for benchmarks and tests)."""
        return sum(len(p._pool.connections) for p in self._pools.values())

    def _pool_for(self, key: PoolKey) -> httpx2.AsyncHTTPTransport | None:
        pool = self._pools.get(key)
        if pool is None and key in self._users:
            pool = self._pools[key] = self._new_pool(key)
        return pool

    def _new_pool(self, key: PoolKey) -> httpx2.AsyncHTTPTransport:
        limits = httpx2.Limits(max_connections=key[2], max_keepalive_connections=key[2],
                               keepalive_expiry=self.keepalive_expiry)  # fmt: skip
        return httpx2.AsyncHTTPTransport(verify=self.ssl_context, limits=limits, trust_env=False)

    def attach(self, key: PoolKey) -> None:
        self._users[key] = self._users.get(key, 0) + 1
        if not self._sweeping:
            self._sweeping = True
            trio.lowlevel.spawn_system_task(self._sweep_idle, name="agent transport idle sweep")

    def begin(self, key: PoolKey) -> None:
        self._busy[key] = self._busy.get(key, 0) + 1

    def end(self, key: PoolKey) -> None:
        busy = self._busy.get(key, 0) - 1
        if busy > 0:
            self._busy[key] = busy
        else:
            self._busy.pop(key, None)
        self._used[key] = trio.current_time()

    async def close_idle(self) -> int:
        """Close the pool (and connections) of every host without a request for
        ``keepalive_expiry`` seconds; returns how many pools were closed."""
        now = trio.current_time()
        idle = [k for k, at in self._used.items()
                if now - at >= self.keepalive_expiry and k not in self._busy]  # fmt: skip
        closed = 0
        for key in idle:
            # Each close awaits: meanwhile a host may be detached or used again.
            at = self._used.get(key)
            if at is None or key in self._busy or trio.current_time() - at < self.keepalive_expiry:
                continue
            del self._used[key]
            old = self._pools.pop(key, None)
            if old is not None:
                closed += 1
                await old.aclose()
        self.idle_closed += closed
        return closed

    async def _sweep_idle(self) -> None:
        while not self._closed:
            await trio.sleep(max(1.0, self.keepalive_expiry))
            try:
                await self.close_idle()
            except Exception:  # never end the sweeping (nor the process) over one pool
                log.exception("closing idle agent connections failed")

    async def detach(self, key: PoolKey) -> None:
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        self._used.pop(key, None)
        pool = self._pools.pop(key, None)
        if pool is not None:
            await pool.aclose()

    async def aclose(self) -> None:
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        self._users.clear()
        for pool in pools:
            await pool.aclose()
        await self.client.aclose()


class AgentClient:
    """One agent, reached at ``address:port`` and identified in errors as ``host``.

    With ``transport`` the client uses the manager's shared ``AgentTransport`` (its host's
    pool; ``ssl_context`` and ``ramp`` are then the transport's); without, it has its own
    httpx client.

    Construct it inside a trio task; call ``aclose()`` (or use ``async with``) to release its
    connections. Connections are kept alive between calls (the agent keeps them 15 s).
    """

    def __init__(
        self,
        host: str,
        address: str,
        ssl_context: ssl.SSLContext,
        *,
        port: int = 12443,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_connections: int = 2,
        ramp: ConnectionRamp | None = None,
        transport: AgentTransport | None = None,
    ) -> None:
        self.host = host
        self.ramp = ramp if transport is None else transport.ramp
        self.address = address
        self.port = port
        self.ssl_context = ssl_context if transport is None else transport.ssl_context
        self.connect_timeout = connect_timeout
        try:
            literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        except ValueError:
            literal = address
        self._transport = transport
        self._pool: PoolKey = (address, port, max_connections)
        self._base = f"https://{literal}:{port}"
        self._timeout = httpx2.Timeout(request_timeout, connect=connect_timeout)
        self._closed = False
        if transport is not None:
            transport.attach(self._pool)
            self._client = transport.client
            return
        self._client = httpx2.AsyncClient(
            base_url=f"https://{literal}:{port}",
            verify=ssl_context,
            timeout=httpx2.Timeout(request_timeout, connect=connect_timeout),
            limits=httpx2.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=10.0,  # below the agent's 15 s keep-alive
            ),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._transport is None:
            await self._client.aclose()
        elif not self._closed:
            self._closed = True
            await self._transport.detach(self._pool)

    # -- plumbing ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request; return the envelope's ``data`` or raise an AgentError."""
        return self._interpret(await self._response(method, path, body=body, params=params))

    async def _response(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """Send one request; the response as it came (transport failures as AgentError)."""
        content = None
        headers = {}
        if body is not None:
            content = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        slot = None if self.ramp is None else _RampSlot(self.ramp)
        extensions: dict[str, Any] = {} if slot is None else {"trace": slot.trace}
        try:
            if self._transport is None:
                response = await self._client.request(
                    method, path, content=content, headers=headers, params=params,
                    extensions=extensions or None,
                )  # fmt: skip
            else:
                self._transport.begin(self._pool)
                try:
                    response = await self._client.request(
                        method, self._base + path, content=content, headers=headers,
                        params=params, timeout=self._timeout,
                        extensions={**extensions, "pool": self._pool},
                    )  # fmt: skip
                finally:
                    self._transport.end(self._pool)
        except httpx2.HTTPError as exc:
            raise map_transport_error(self.host, exc) from exc
        finally:
            if slot is not None:
                slot.release()
        return response

    async def _read(
        self, parser: Callable[[Any], T], path: str, params: Mapping[str, str] | None = None
    ) -> T:
        """``GET path``, its envelope's data parsed by ``parser``: in a worker thread when the
        answer is large (``OFF_LOOP_BYTES``): json and Python parsing, off the event loop."""
        response = await self._response("GET", path, params=params)
        return await _off_loop(response, lambda: self._parse(parser, self._interpret(response)))

    def _interpret(self, response: httpx2.Response) -> Any:
        status = response.status_code
        ctype = response.headers.get("content-type", "")
        retry_after = _retry_after(response.headers)
        if "json" not in ctype:
            text = response.text.replace("\x00", "").strip()[:500]
            if status == 429:
                raise RateLimited(self.host, f"rate limited: {text}", retry_after=retry_after)
            if status == 403:
                raise NotWhitelisted(self.host, "this manager's IP is not in the agent whitelist")
            if status == 405:
                raise ProtocolError(self.host, "endpoint not supported by this agent", status=405)
            if status >= 500:
                raise AgentRequestError(self.host, status=status, code=f"HTTP_{status}",
                                        message=text or "server error", retryable=True,
                                        retry_after=retry_after)  # fmt: skip
            raise ProtocolError(
                self.host, f"HTTP {status} ({ctype or 'no content type'}): {text}", status=status
            )
        try:
            payload, by_json = _decode_json(response.content)
            # A NUL can only arrive escaped ("\u0000": JSON refuses raw control characters), so
            # the walk over every decoded string is needed only when the body has one (it was
            # 8 % of a 10,000-host manager's CPU, spent on package lists without any).
            if b"\\u0000" in response.content:
                payload = without_nul(payload)
        except ValueError as exc:
            raise ProtocolError(
                self.host, f"malformed JSON (HTTP {status}): {_one_line(exc)}", status=status
            ) from None
        # A lone surrogate (escaped, or encoded in the bytes) makes msgspec refuse the body
        # and json keeps it: such text cannot be stored (nor sent back in a request).
        if by_json and (bad := invalid_text(payload)) is not None:
            raise ProtocolError(
                self.host,
                f"text that is not valid Unicode (a lone surrogate) in the answer: {bad!r:.80}",
                status=status,
            )
        if not isinstance(payload, dict) or "success" not in payload:
            raise ProtocolError(self.host, f"not an envelope (HTTP {status})", status=status)
        if payload["success"] is True and 200 <= status < 300:
            return payload.get("data")
        error = payload.get("error") or {}
        if not isinstance(error, dict):
            raise ProtocolError(
                self.host, f"malformed error envelope (HTTP {status})", status=status
            )
        code = str(error.get("code") or f"HTTP_{status}")
        kind = AdmissionRefused if code in ADMISSION_CODES else AgentRequestError
        raise kind(
            self.host,
            status=status,
            code=code,
            message=str(error.get("message") or ""),
            details=error.get("details"),
            retryable=bool(error.get("retryable", False)),
            retry_after=retry_after,
        )

    def _parse(self, parser: Callable[[Any], T], data: Any) -> T:
        if not isinstance(data, dict):
            raise ProtocolError(self.host, "the envelope's data is not an object")
        try:
            return parser(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ProtocolError(self.host, f"unexpected payload: {exc}") from None

    # -- reads ------------------------------------------------------------------------------

    async def health(self) -> Health:
        """``GET /health`` (same handler as /api/v1/health, but exempt from rate limiting)."""
        return self._parse(parse_health, await self._request("GET", "/health"))

    async def system_info(self) -> SystemInfo:
        return self._parse(parse_system_info, await self._request("GET", "/api/v1/system/info"))

    async def service(self, name: str) -> ServiceStatus:
        data = await self._request("GET", f"/api/v1/system/services/{check_package_name(name)}")
        return self._parse(parse_service, data)

    async def packages(
        self, *, name: str | None = None, status: str | None = None
    ) -> tuple[Package, ...]:
        params = {}
        if name is not None:
            params["name"] = name
        if status is not None:
            params["status"] = status
        response = await self._response("GET", "/api/v1/packages", params=params or None)
        fast = _fast_packages(response)
        if fast is not None:
            return fast
        return await _off_loop(
            response, lambda: self._parse(parse_packages, self._interpret(response))
        )

    async def installed_versions(self) -> dict[str, str]:
        """``GET /api/v1/packages`` as ``{name: version}`` (a job row's package snapshot), the
        same map ``packages()`` gives, decoded straight into those two fields: ~7x less CPU
        for 1,200 packages than records of every field. A response the fast path does not take
        (an error, an unusual field type, an escaped NUL) goes through the checks
        ``packages()`` falls back to (``_interpret``, ``parse_packages``; on the event loop,
        not in a worker thread): the same map or the same ``AgentError``, no second request."""
        response = await self._response("GET", "/api/v1/packages")
        fast = _fast_versions(response)
        if fast is not None:
            return fast
        packages = self._parse(parse_packages, self._interpret(response))
        return {p.name: p.version for p in packages}

    async def package(self, name: str) -> Package:
        data = await self._request("GET", f"/api/v1/packages/{check_package_name(name)}")
        return self._parse(parse_package, data)

    async def patches(self) -> PatchList:
        return await self._read(parse_patches, "/api/v1/patches")

    async def patch_data(self, unless: bytes = b"") -> PatchPoll:
        """``patches()`` then ``packages()``, with the key of both answers (``PatchPoll``).
        When the key equals ``unless`` (the key of the data the caller last stored) the
        package list is not decoded: a re-poll of unchanged data costs the requests, one scan
        of the answers and a hash, instead of decoding ~1,200 packages and digesting them."""
        answer = await self._response("GET", "/api/v1/patches")
        patches = await _off_loop(
            answer, lambda: self._parse(parse_patches, self._interpret(answer))
        )
        raw_patches = _raw_data(answer)
        response = await self._response("GET", "/api/v1/packages")
        raw_packages = _raw_data(response)
        key = b""
        if raw_patches is not None and raw_packages is not None:
            digest = hashlib.blake2b(raw_patches, digest_size=16)
            digest.update(b"\0")
            digest.update(raw_packages)
            key = digest.digest()
        if key and key == unless:
            return PatchPoll(patches, None, key)
        packages = _fast_packages(response)
        if packages is None:
            packages = await _off_loop(
                response, lambda: self._parse(parse_packages, self._interpret(response))
            )
        return PatchPoll(patches, packages, key)

    async def jobs(self, *, status: str | None = None, limit: int = 50) -> tuple[JobInfo, ...]:
        """The agent's job history, newest first, internal refresh jobs removed."""
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        data = await self._request("GET", "/api/v1/jobs", params=params)
        return self._parse(parse_jobs, data)

    async def job(self, job_id: str) -> JobInfo:
        data = await self._request("GET", f"/api/v1/jobs/{_check_job_id(job_id)}")
        return self._parse(parse_job, data)

    # -- mutations (202 + job) --------------------------------------------------------------

    async def apply_patches(
        self, selection: PatchSelection, *, allow_reboot: bool, reboot_delay_seconds: int = 0
    ) -> JobAccepted:
        """``POST /patches/apply``. ``allow_reboot`` is always sent; ``packages`` is either the
        explicit list or null (= all), never omitted."""
        body = {
            "packages": None if selection.packages is None else list(selection.packages),
            "allow_reboot": allow_reboot,
            "reboot_delay_seconds": max(0, int(reboot_delay_seconds)),
        }
        return await self._job("POST", "/api/v1/patches/apply", body)

    async def install(
        self,
        packages: Sequence[tuple[str, str | None]],
        *,
        no_recommends: bool = True,
        force: bool = False,
    ) -> JobAccepted:
        """``POST /packages``: names with optional pinned versions. ``force`` skips signature
        checks on apt: it is never set unless the caller insists."""
        if not packages:
            raise ValueError("install needs at least one package")
        body = {
            "packages": [
                {"name": check_package_name(n), "version": None if v is None else check_version(v)}
                for n, v in packages
            ],
            # When "options" is present the agent requires both keys.
            "options": {"force": force, "no_recommends": no_recommends},
        }
        return await self._job("POST", "/api/v1/packages", body)

    async def update(self, name: str) -> JobAccepted:
        return await self._job("PUT", f"/api/v1/packages/{check_package_name(name)}", None)

    async def remove(self, name: str) -> JobAccepted:
        return await self._job("DELETE", f"/api/v1/packages/{check_package_name(name)}", None)

    async def reboot(
        self,
        *,
        delay_seconds: int = 0,
        force: bool = False,
        acknowledge_package_database_corruption_risk: bool = False,
    ) -> JobAccepted:
        body = {
            "delay_seconds": max(0, int(delay_seconds)),
            "force": force,
            "acknowledge_package_database_corruption_risk": (
                acknowledge_package_database_corruption_risk
            ),
        }
        return await self._job("POST", "/api/v1/system/reboot", body)

    async def rollback(self, job_id: str) -> JobAccepted:
        """The agent's rollback endpoint. It queues a job that never runs (§3.14): the manager
        does not use it; it exists for completeness and contract tests."""
        data = await self._request("POST", f"/api/v1/jobs/{_check_job_id(job_id)}/rollback")
        return self._parse(parse_job_accepted, data)

    async def delete_job(self, job_id: str) -> None:
        """Remove a terminal job from the agent's history (it never cancels anything)."""
        await self._request("DELETE", f"/api/v1/jobs/{_check_job_id(job_id)}")

    async def _job(self, method: str, path: str, body: Mapping[str, Any] | None) -> JobAccepted:
        return self._parse(parse_job_accepted, await self._request(method, path, body=body))

    # -- WebSocket --------------------------------------------------------------------------

    @asynccontextmanager
    async def job_events(self) -> AsyncIterator[JobEventStream]:
        """Connect to ``/api/v1/ws/jobs`` and yield a stream of job events.

        The connect is bounded by the connect timeout (a refused client certificate would
        otherwise hang in trio-websocket for 60 s). Raises ``AgentError`` subclasses. An
        exception raised in the body comes out as itself, not wrapped in an exception group.
        """
        try:
            async with self._connected_events() as stream:
                yield stream
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                inner = group.exceptions[0]
                if isinstance(inner, trio_websocket.HandshakeError):
                    # A refused upgrade (429, 403, 405…) surfaces from trio-websocket's reader
                    # task, not from connect_websocket.
                    raise ProtocolError(
                        self.host, f"WebSocket handshake refused: {inner}"
                    ) from None
                raise inner from None
            raise

    @asynccontextmanager
    async def _connected_events(self) -> AsyncIterator[JobEventStream]:
        async with trio.open_nursery() as nursery:
            slot = None if self.ramp is None else _RampSlot(self.ramp)
            try:
                if slot is not None:
                    await slot.trace(_RampSlot._OPENING, {})
                with trio.fail_after(self.connect_timeout):
                    ws = await trio_websocket.connect_websocket(
                        nursery, self.address, self.port, "/api/v1/ws/jobs",
                        use_ssl=self.ssl_context, message_queue_size=256,
                    )  # fmt: skip
            except trio.TooSlowError:
                nursery.cancel_scope.cancel()
                raise TLSRejected(self.host, "WebSocket handshake got no answer") from None
            except trio_websocket.HandshakeError as exc:
                nursery.cancel_scope.cancel()
                raise ProtocolError(self.host, f"WebSocket handshake refused: {exc}") from None
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                nursery.cancel_scope.cancel()
                raise _map_ws_error(self.host, exc) from exc
            finally:
                if slot is not None:
                    slot.release()
            try:
                yield JobEventStream(self.host, ws)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()


class _Versioned(msgspec.Struct, gc=False):
    name: str
    version: str | None = None


class _VersionList(msgspec.Struct, gc=False):
    packages: list[_Versioned]


class _VersionEnvelope(msgspec.Struct, gc=False):
    success: bool
    data: _VersionList


E = TypeVar("E")


def _fast_envelope(response: httpx2.Response, decoder: msgspec.json.Decoder[E]) -> E | None:
    """``response``'s envelope through a typed msgspec ``decoder``, or None when the body needs
    the full checks of ``_interpret`` (not 2xx JSON, an escaped NUL, a field of another type,
    malformed or too deeply nested JSON): the fast paths' one gate."""
    body = response.content
    if not 200 <= response.status_code < 300 or "json" not in response.headers.get(
        "content-type", ""
    ):
        return None
    if b"\\u0000" in body:
        return None
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None  # the full checks say why


_VERSIONS = msgspec.json.Decoder(_VersionEnvelope)


def _fast_versions(response: httpx2.Response) -> dict[str, str] | None:
    """A successful package list's ``{name: version}``, or None when the body needs the full
    checks of ``_interpret`` (not 2xx JSON, not a success envelope, escaped NULs, a field of
    another type)."""
    envelope = _fast_envelope(response, _VERSIONS)
    if envelope is None:
        return None
    if envelope.success is not True:
        return None
    return {p.name: p.version or "" for p in envelope.data.packages}


async def _off_loop(response: httpx2.Response, parse: Callable[[], T]) -> T:
    """``parse()`` of ``response``: in a worker thread when the body is large."""
    if len(response.content) < OFF_LOOP_BYTES:
        return parse()
    return await trio.to_thread.run_sync(parse)


class _PackageItem(msgspec.Struct, gc=False):
    """The fields of a package list entry that ``Package`` keeps (the others are skipped
    without being decoded); types as ``parse_package`` takes them without converting."""

    name: str
    version: str | None = None
    status: str | None = None
    upgradable: bool | None = False
    latest_version: str | None = None
    description: str | None = None


class _PackageList(msgspec.Struct):
    packages: list[_PackageItem]


class _PackageEnvelope(msgspec.Struct):
    success: bool
    data: _PackageList


_PACKAGES = msgspec.json.Decoder(_PackageEnvelope)


class _RawEnvelope(msgspec.Struct):
    success: bool
    data: msgspec.Raw


_RAW = msgspec.json.Decoder(_RawEnvelope)


def _raw_data(response: httpx2.Response) -> bytes | None:
    """A successful answer's ``data`` exactly as sent (the envelope's request id and time
    left out), or None for anything unusual (not 2xx JSON, not a success, an escaped NUL)."""
    envelope = _fast_envelope(response, _RAW)
    if envelope is None:
        return None
    return bytes(envelope.data) if envelope.success is True else None


def _fast_packages(response: httpx2.Response) -> tuple[Package, ...] | None:
    """A successful package list as ``parse_packages`` gives it, decoded straight into the
    fields it keeps (about 2.5x less CPU than decoding every field and parsing dicts), or None
    when the body needs the full checks of ``_interpret`` (not 2xx JSON, not a success
    envelope, an escaped NUL, a field of another type)."""
    envelope = _fast_envelope(response, _PACKAGES)
    if envelope is None:
        return None
    if envelope.success is not True:
        return None
    return tuple(
        [
            Package(
                p.name, p.version or "", parse_package_status(p.status), bool(p.upgradable),
                p.latest_version, p.description or "",
            )
            for p in envelope.data.packages
        ]
    )  # fmt: skip


def _map_ws_error(host: str, exc: BaseException) -> AgentError:
    err = _ssl_cause(exc)
    if isinstance(err, ssl.SSLCertVerificationError):
        return AgentCertificateInvalid(host, f"the agent's certificate is not acceptable: {err}")
    if err is not None:
        return TLSRejected(host, _rejection_message(err))
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(host, "connection refused")
    if isinstance(exc, OSError):
        return Unreachable(host, f"cannot connect: {exc}")
    return TLSRejected(host, "connection closed during the WebSocket handshake")


def _check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    return job_id


class JobEventStream:
    """Job events from one agent. ``receive()`` skips greetings and acknowledgements."""

    def __init__(self, host: str, ws: trio_websocket.WebSocketConnection) -> None:
        self.host = host
        self._ws = ws

    async def receive(self) -> JobEvent:
        """The next job event. Raises ``TransportError`` when the connection drops (the agent
        closes without a close frame on restart, reboot or heartbeat timeout)."""
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise TransportError(self.host, f"job event stream closed ({exc.reason})") from None
            if not isinstance(message, str):
                continue
            try:
                data = without_nul(json.loads(message))
                if (bad := invalid_text(data)) is not None:
                    raise ValueError(f"text that is not valid Unicode: {bad!r:.80}")
                event = parse_ws_message(data) if isinstance(data, dict) else None
            except RecursionError:
                raise ProtocolError(self.host, "bad WebSocket message: nested too deeply") from None
            except (ValueError, TypeError, KeyError) as exc:
                raise ProtocolError(self.host, f"bad WebSocket message: {_one_line(exc)}") from None
            if event is not None:
                return event

    async def send_raw(self, text: str) -> None:
        """Send a text frame (subscribe messages; the agent broadcasts everything anyway)."""
        await self._ws.send_message(text)
