"""Hypercorn's trio worker serving the app inside the caller's nursery (TLS 1.3 only)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _TLS13Config(HypercornConfig):
    """Hypercorn hard-codes TLS 1.2 as the minimum; we allow 1.3 only."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
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


async def serve_web(
    app: ASGIApp,
    listener: WebListener,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; reports the bound URLs through ``started``."""
    cfg = _TLS13Config()
    cfg.bind = [listener.bind]
    cfg.graceful_timeout = listener.graceful_timeout_s
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.alpn_protocols = ["h2", "http/1.1"]
    if listener.certfile is not None and listener.keyfile is not None:
        cfg.certfile = str(listener.certfile)
        cfg.keyfile = str(listener.keyfile)
    else:
        log.warning(
            "serving plain HTTP on %s: only do this behind a TLS-terminating reverse proxy",
            listener.bind,
        )
    reporter = _Started(task_status)
    try:
        await serve(
            app,  # type: ignore[arg-type]
            cfg,
            shutdown_trigger=shutdown_trigger,
            task_status=reporter,  # type: ignore[arg-type]
        )
    except* OSError as group:
        if reporter.done:
            raise
        reason: BaseException = group
        while isinstance(reason, BaseExceptionGroup):
            reason = reason.exceptions[0]
        raise ListenError(
            f"cannot listen on {listener.bind}: {getattr(reason, 'strerror', None) or reason}"
            " (set server.bind or --bind)"
        ) from None


class ListenError(Exception):
    """The web listener could not be opened (port taken, address not local, …)."""


class _Started:
    def __init__(self, task_status: trio.TaskStatus[list[str]]) -> None:
        self.task_status = task_status
        self.done = False

    def started(self, value: list[str]) -> None:
        self.done = True
        self.task_status.started(value)
