"""What every service call receives: the system (actor handle + database) and the principal.

Every service function takes ``(System, Principal, ...)``, calls ``authz.require`` for what it
changes and filters what it reads with ``authz.scope_of`` (in SQL, through ``storage``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import HTTPConnection

from storage import Database

from ..authz import Principal
from ..handle import SystemHandle

__all__ = ["Principal", "System", "concurrently", "principal"]


@dataclass(frozen=True)
class System:
    handle: SystemHandle
    db: Database


def principal(request: HTTPConnection) -> Principal:
    """The request's principal (loaded by ``authz.PrincipalMiddleware``); a request that got
    here without one has no rights."""
    who = request.scope.get("state", {}).get("principal")
    return who if isinstance(who, Principal) else Principal("")


async def concurrently(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Independent reads at once (each its own database round trip), their results in order.
    A failure is raised as itself, not as a group, so the app's error handlers answer it (4xx,
    503) as if the reads had run one after another; the other reads are cancelled."""
    results: list[Any] = [None] * len(calls)

    async def one(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(one, index, call)
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
    return results
