"""Authorization: the one place that decides what a principal may see and do (R-7.4).

Roles:

- ``admin``: everything, every host.
- ``operator``: reads and acts on the hosts of their groups (plus ungrouped hosts when
  ``auth.operators_see_ungrouped`` is on): refresh hosts, deploy / cancel / retry / roll back
  jobs, manage maintenance windows of those hosts and groups.
- ``auditor``: reads within their groups and reads the (fleet-wide) audit log; every unsafe
  action is refused (verifying the audit chain changes nothing but records the check).

Two answers, used by every service call, page, API route and the live relay:

- ``scope_of(principal)`` → the ``storage.HostScope`` every query filters by *in SQL*
  (hosts, jobs, windows, history, counts). Things outside the scope are answered exactly like
  things that do not exist: ``Missing`` (404), for reads and for mutations alike, so that a
  scoped user learns nothing about other hosts.
- ``require(principal, action)`` → raises ``Forbidden`` (403) when the role may not do the
  action at all (an auditor deleting, an operator creating groups).

Scope changes (group membership of hosts or users) are announced with ``scope_changed(db)``;
open relay subscriptions wait on ``wait_scope_changed`` and refresh their set of visible hosts
at once.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from storage import Database, HostScope, PrincipalRow, User, load_principal, role_scope


class Role(enum.Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    NONE = "none"  # not logged in, disabled, or a role this version does not know: no rights

    @classmethod
    def of(cls, value: str) -> Role:
        try:
            role = cls(value)
        except ValueError:
            return cls.NONE
        return role


class Action(enum.Enum):
    VIEW = "view"  # read what is in scope (every logged-in role)
    REFRESH_HOSTS = "refresh_hosts"  # ask in-scope agents for fresh data
    MANAGE_HOSTS = "manage_hosts"  # register and remove hosts
    MANAGE_GROUPS = "manage_groups"  # create, rename, delete groups; host membership
    DISCOVER = "discover"  # network scans and registering what they find
    DEPLOY = "deploy"  # create, preview, cancel, retry, roll back jobs on in-scope hosts
    MANAGE_WINDOWS = "manage_windows"  # windows of in-scope hosts and of the user's groups
    MANAGE_BLACKOUTS = "manage_blackouts"  # fleet-wide blackouts
    OBSERVE = "observe"  # /metrics and the health details (fleet-wide figures)
    MANAGE_USERS = "manage_users"  # users, roles, user groups, others' sessions
    MANAGE_PKI = "manage_pki"  # certificates (list, renew, revoke) and agent enrolment
    VIEW_AUDIT = "view_audit"  # the audit log: read, export, verify (see _reads_whole_log)
    MANAGE_SETTINGS = "manage_settings"  # notification (SMTP) settings, run-time log level


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: frozenset(
        {Action.VIEW, Action.REFRESH_HOSTS, Action.DEPLOY, Action.MANAGE_WINDOWS}
    ),
    Role.AUDITOR: frozenset({Action.VIEW, Action.VIEW_AUDIT}),
    Role.NONE: frozenset(),
}


class TokenScope(enum.Enum):
    """What an API token (or an access JWT exchanged for one) may do, on top of its owner's
    current role: the token's rights are always ``_ALLOWED[role] & _TOKEN_ALLOWED[scope]``."""

    READ = "read"  # read-only API calls
    OPERATE = "operate"  # + what operators do (refresh, deploy, windows)
    METRICS = "metrics"  # only /metrics (Prometheus)


_TOKEN_ALLOWED: dict[TokenScope, frozenset[Action]] = {
    TokenScope.READ: frozenset({Action.VIEW, Action.VIEW_AUDIT}),
    TokenScope.OPERATE: frozenset(
        {Action.VIEW, Action.REFRESH_HOSTS, Action.DEPLOY, Action.MANAGE_WINDOWS}
    ),
    TokenScope.METRICS: frozenset({Action.OBSERVE}),
}
# Paths a token never reaches, whatever its scope: the caller's own account (password, tokens,
# factors) and the exchange itself need the person, not a credential of theirs.
TOKEN_NEVER = ("/api/v1/profile", "/api/v1/tokens", "/api/v1/auth/", "/api/v1/live")
SAFE_METHODS = frozenset({"GET", "HEAD"})


def token_may_request(scope: TokenScope, method: str, path: str) -> bool:
    """Whether a token of ``scope`` may send this request at all (before the route's own
    ``require``): bearer credentials are for the JSON API and /metrics only; a ``metrics``
    token reaches only ``GET /metrics``; a ``read`` token only safe methods; no token reaches
    the paths of ``TOKEN_NEVER``."""
    if scope is TokenScope.METRICS:
        return path == "/metrics" and method in SAFE_METHODS
    if path == "/metrics":
        return False  # OBSERVE is the metrics scope's alone
    if not path.startswith("/api/") or path.startswith(TOKEN_NEVER):
        return False
    return scope is TokenScope.OPERATE or method in SAFE_METHODS


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in user as loaded for this request (or relay refresh)."""

    username: str
    user_id: int = 0
    role: Role = Role.NONE
    group_ids: frozenset[int] = frozenset()
    see_ungrouped: bool = False  # operators also see hosts of no group (the setting)
    token_scope: TokenScope | None = None  # set when the request came with a bearer token
    token_groups: frozenset[int] | None = None  # the token's group restriction, if any
    token_id: int = 0  # the API token (audit actor "token:ID:NAME@OWNER")
    token_name: str = ""

    @classmethod
    def of(cls, row: PrincipalRow | None, *, operators_see_ungrouped: bool) -> Principal:
        if row is None:
            return cls("")
        role = Role.of(row.role) if row.state == "active" else Role.NONE
        return cls(
            row.username,
            row.user_id,
            role,
            row.group_ids,
            operators_see_ungrouped and role is Role.OPERATOR,
        )


class Forbidden(Exception):
    """403: the principal's role may not do this action (whatever the target)."""

    def __init__(self, who: Principal, action: Action) -> None:
        role = who.role.value
        super().__init__(f"the {role} role may not {action.value.replace('_', ' ')}")
        self.action = action
        self.role = who.role


def _actions(who: Principal) -> frozenset[Action]:
    actions = _ALLOWED[who.role]
    if who.token_scope is not None:
        actions &= _TOKEN_ALLOWED[who.token_scope]
    if Action.VIEW_AUDIT in actions and not _reads_whole_log(who):
        actions -= {Action.VIEW_AUDIT}
    return actions


def _reads_whole_log(who: Principal) -> bool:
    """The audit log names every host (and every user), so only a principal restricted to no
    groups reads it: an admin (not through a token restricted to groups) or an auditor who is
    a member of no group."""
    if who.token_groups is not None:
        return False
    return who.role is Role.ADMIN or (who.role is Role.AUDITOR and not who.group_ids)


def may(who: Principal, action: Action) -> bool:
    return action in _actions(who)


def allowed(who: Principal) -> frozenset[str]:
    """The names of the actions ``who``'s role (and token scope) may do (templates show only
    those)."""
    return frozenset(a.value for a in _actions(who))


def require(who: Principal, action: Action) -> None:
    """Raise ``Forbidden`` unless ``who``'s role allows ``action``. Targets are checked by
    scope (``scope_of``) in the query that reads or changes them."""
    if not may(who, action):
        raise Forbidden(who, action)


def scope_of(who: Principal) -> HostScope:
    """The hosts ``who`` may see and act on: all for admins; the user's groups for operators
    and auditors (plus ungrouped hosts for operators when the setting allows:
    ``storage.role_scope``, the rule the notifier uses too); nothing for anyone else. A token
    restricted to groups narrows that to its groups."""
    if who.role is Role.NONE:
        return HostScope()
    if who.token_groups is not None:  # a token restricted to groups: those hosts only
        groups = who.token_groups if who.role is Role.ADMIN else who.token_groups & who.group_ids
        return HostScope(group_ids=groups)
    return role_scope(who.role.value, who.group_ids, operators_see_ungrouped=who.see_ungrouped)


# -- scope change notifications ---------------------------------------------------------------


@dataclass
class _Changes:
    generation: int = 0
    event: trio.Event = field(default_factory=trio.Event)


_changes: weakref.WeakKeyDictionary[Database, _Changes] = weakref.WeakKeyDictionary()


def _changes_of(db: Database) -> _Changes:
    changes = _changes.get(db)
    if changes is None:
        changes = _changes[db] = _Changes()
    return changes


def scope_changed(db: Database) -> None:
    """Announce that group membership (of hosts or users), roles or the set of hosts changed:
    every open subscription re-reads its principal and visible hosts."""
    changes = _changes_of(db)
    changes.generation += 1
    event, changes.event = changes.event, trio.Event()
    event.set()


def scope_generation(db: Database) -> int:
    return _changes_of(db).generation


async def wait_scope_changed(db: Database, seen: int) -> int:
    """Wait until the generation differs from ``seen``; returns the new generation."""
    changes = _changes_of(db)
    while changes.generation == seen:
        await changes.event.wait()
    return changes.generation


async def load(db: Database, user_id: int, *, operators_see_ungrouped: bool) -> Principal:
    """The principal of a user as stored now (``Role.NONE`` when gone or disabled)."""
    row = await db.run(load_principal, user_id) if user_id else None
    return Principal.of(row, operators_see_ungrouped=operators_see_ungrouped)


def of_session_user(user: User, *, operators_see_ungrouped: bool) -> Principal:
    """The principal of a session's user (``storage.User``: role, state and group ids as the
    session lookup read them on this request)."""
    row = PrincipalRow(user.id, user.username, user.role, user.state, frozenset(user.group_ids))
    return Principal.of(row, operators_see_ungrouped=operators_see_ungrouped)


class PrincipalMiddleware:
    """Puts the request's ``Principal`` into ``scope["state"]["principal"]`` (after the auth
    middleware admitted the session). The session lookup reads the user's role, state and
    groups on every request (no extra query), so a role or membership change applies to the
    very next request."""

    def __init__(self, app: ASGIApp, db: Database, operators_see_ungrouped: bool = False) -> None:
        self.app = app
        self.db = db
        self.operators_see_ungrouped = operators_see_ungrouped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            state: dict[str, Any] = scope.setdefault("state", {})
            if isinstance(state.get("token_principal"), Principal):  # web.tokens admitted it
                state["principal"] = state["token_principal"]
                await self.app(scope, receive, send)
                return
            session = state.get("session")
            state["principal"] = (
                of_session_user(session.user, operators_see_ungrouped=self.operators_see_ungrouped)
                if session is not None
                else Principal("")
            )
        await self.app(scope, receive, send)
