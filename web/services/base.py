"""What every service call receives: the system (actor handle + database) and the principal.

A ``Principal`` flows into every service function so that authorization can be one
``require(principal, action, target)`` per call later; today every logged-in user may do
everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from storage import Database

from ..handle import SystemHandle


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in user (API tokens later)."""

    username: str


@dataclass(frozen=True)
class System:
    handle: SystemHandle
    db: Database


def principal(request: Request) -> Principal:
    """The request's principal (the auth middleware has admitted it already)."""
    session = request.scope.get("state", {}).get("session")
    return Principal(session.user.username if session else "")
