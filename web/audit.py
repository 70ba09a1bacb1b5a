"""Audit entries from the web layer: who (the principal), from where (the client address), which
request (``X-Request-Id``), and the two ways to write them (``storage.audit`` does the chain):

- ``await audited(sys_or_db, entry, fn, *args)``: run ``fn(conn, *args)`` and append the entry
  in ONE transaction (a failed append fails the action; nothing changes);
- ``await record(sys_or_db, entry)``: an entry on its own, for outcomes that change nothing in
  the database (a failed login, a denied action, a report download).

``entry(who, action, target, ...)`` fills the source address and request id from the current
request (``AuditContextMiddleware`` keeps them in a context variable), so services need no
request object. Actions are dotted ``domain.verb`` names (``host.remove``, ``job.create``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from storage import AuditArg, AuditEntry, Database, HostRow, JobSpec, run_audited
from storage import audit as chain

from .authz import Forbidden, Principal
from .errors import envelope

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = [
    "AuditContextMiddleware",
    "AuditEntry",
    "actor_of",
    "audited",
    "entry",
    "record",
]

# (source address, request id) of the request being served; ("", "") outside one.
_request: ContextVar[tuple[str, str]] = ContextVar("audit_request", default=("", ""))


class AuditContextMiddleware:
    """Keeps the client address and request id where ``entry`` finds them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        source = str(client[0]) if client else ""
        rid = str(scope.get("state", {}).get("request_id", ""))
        token = _request.set((source, rid))
        try:
            await self.app(scope, receive, send)
        finally:
            _request.reset(token)


def actor_of(who: Principal | str) -> str:
    """``user:NAME``, ``token:ID:NAME@OWNER`` (a principal carrying ``token_id``/``token_name``),
    or ``anonymous``; a string is taken as the actor itself (``system``, ``cli:...``)."""
    if isinstance(who, str):
        return who or "anonymous"
    token_id = getattr(who, "token_id", None)
    if token_id:
        return f"token:{token_id}:{getattr(who, 'token_name', '')}@{who.username}"
    if who.username:
        return f"user:{who.username}"
    return "anonymous"


def entry(
    who: Principal | str,
    action: str,
    target: str = "",
    *,
    outcome: str = "ok",
    before: Any = None,
    after: Any = None,
    detail: str = "",
) -> AuditEntry:
    """An entry by ``who`` with the current request's source address and request id."""
    source, rid = _request.get()
    return AuditEntry(
        actor=actor_of(who),
        action=action,
        target=target,
        outcome=outcome,
        source=source,
        request_id=rid,
        before=before,
        after=after,
        detail=detail,
    )


def _db(sys_or_db: Any) -> Database:
    db = sys_or_db if isinstance(sys_or_db, Database) else getattr(sys_or_db, "db", None)
    if not isinstance(db, Database):
        raise TypeError("audited/record need a storage.Database or an object with .db")
    return db


async def audited(
    sys_or_db: Any,
    what: AuditArg,
    fn: Callable[..., T],
    *args: Any,
) -> T:
    """Run ``fn(conn, *args)`` and append ``what`` in one transaction; ``what`` may be a
    function of fn's result (e.g. the id of what it created)."""
    return await run_audited(_db(sys_or_db), what, fn, *args)


async def record(sys_or_db: Any, what: AuditEntry) -> None:
    """Append an entry on its own transaction (nothing else changes)."""
    await chain.record(_db(sys_or_db), what)


async def record_denied(db: Database, request: Request, exc: Forbidden) -> None:
    """A role refused an action (403): recorded, never turned into a 500 if recording fails."""
    who = request.scope.get("state", {}).get("principal")
    what = entry(
        who if isinstance(who, Principal) else "anonymous",
        f"authz.{exc.action.value}",
        f"{request.method} {request.url.path}",
        outcome="denied",
        detail=str(exc),
    )
    try:
        await record(db, what)
    except Exception as error:  # the refusal stands; the log says the entry is missing
        log.error("audit entry for a denied request not written: %s", error)


def host_view(row: HostRow) -> dict[str, Any]:
    """What an entry keeps of a host."""
    return {
        "name": row.name,
        "address": row.address,
        "port": row.port,
        "display_name": row.display_name,
        "paused": row.paused,
        "groups": list(row.groups),
    }


def host_targets(host_ids: Sequence[int]) -> str:
    """``host:1,host:2`` (the first 20, then ``…``); ``hosts:all`` for none given."""
    if not host_ids:
        return "hosts:all"
    shown = ",".join(f"host:{i}" for i in host_ids[:20])
    return shown + (" …" if len(host_ids) > 20 else "")


def job_view(spec: JobSpec, host_ids: Sequence[int]) -> dict[str, Any]:
    """What an entry keeps of a new job."""
    return {
        "kind": spec.kind,
        "schedule": spec.schedule,
        "selection": spec.selection,
        "packages": list(spec.packages)[:100],
        "allow_reboot": spec.allow_reboot,
        "hosts": list(host_ids)[:200],
        "host_count": len(host_ids),
    }


class DoneNotRecorded(chain.AuditWriteFailed):
    """An action that cannot be rolled back (a certificate renewed on disk) was done, but its
    audit entry could not be written."""


async def write_failed(request: Request, exc: Exception) -> Response:
    """503: the action's audit entry could not be written, so the action was rolled back (or,
    for ``DoneNotRecorded``, it was done and is not recorded)."""
    log.error("%s %s refused: %s", request.method, request.url.path, exc)
    if isinstance(exc, DoneNotRecorded):
        message = f"{exc}; the audit log cannot be written, so it is not recorded"
    else:
        message = "the audit log cannot be written, so nothing was changed; see the server log"
    return envelope(request, 503, "unavailable", message)
