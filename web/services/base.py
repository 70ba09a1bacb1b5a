"""What every service call receives: the system (actor handle + database) and the principal.

Every service function takes ``(System, Principal, ...)``, calls ``authz.require`` for what it
changes and filters what it reads with ``authz.scope_of`` (in SQL, through ``storage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from storage import Database

from ..authz import Principal
from ..handle import SystemHandle

__all__ = ["Principal", "System", "principal"]


@dataclass(frozen=True)
class System:
    handle: SystemHandle
    db: Database


def principal(request: HTTPConnection) -> Principal:
    """The request's principal (loaded by ``authz.PrincipalMiddleware``); a request that got
    here without one has no rights."""
    who = request.scope.get("state", {}).get("principal")
    return who if isinstance(who, Principal) else Principal("")
