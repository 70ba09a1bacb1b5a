"""Users: accounts, roles, group scope, lockout, passwords and sessions (R-7.1, R-7.3).

Only admins (``Action.MANAGE_USERS``) list, create and change users; every user may change
their own password and see and end their own sessions. A change of role, groups or state ends
that user's sessions (in ``storage``); every change that ends sessions announces a scope
change, so that open relay subscriptions re-read their principal and sockets of ended
sessions close at once.
"""

from __future__ import annotations

from typing import Any

from storage import (
    Conflict,
    LastAdmin,
    NotFound,
    SessionItem,
    UserItem,
    create_user,
    get_user_by_id,
    list_sessions,
    list_users,
    revoke_session,
    revoke_sessions,
    set_password,
    unlock_user,
    update_user,
)
from storage.mfa import reset_factors
from storage.tokens import revoke_user_families, revoke_user_tokens

from .. import audit
from ..auth import Auth, Busy, Outcome, generate_password
from ..authz import Action, require, scope_changed
from ..handle import AlreadyExists, HandleError, InvalidInput, Missing, TooBusy
from ..models import PasswordChange, UserCreate, UserUpdate
from ..passwords import password_problem
from .base import Principal, System


class LastAdminRefused(HandleError):
    """409: the change would leave no active admin."""

    status = 409
    code = "last_admin"


def _user_view(u: UserItem | None) -> dict[str, Any] | None:
    """What an audit entry keeps of a user (never a password or its hash)."""
    if u is None:
        return None
    return {"username": u.username, "role": u.role, "state": u.state, "groups": u.groups}


def _user_target(u: UserItem | None, user_id: int) -> str:
    return f"user:{u.username}" if u else f"user_id:{user_id}"


async def all_users(sys: System, who: Principal) -> list[UserItem]:
    require(who, Action.MANAGE_USERS)
    return await sys.db.run(list_users)


async def get(sys: System, who: Principal, user_id: int) -> UserItem:
    if user_id != who.user_id:
        require(who, Action.MANAGE_USERS)
    found = await sys.db.run(list_users, user_id)
    if not found:
        raise Missing(f"no user with id {user_id}")
    return found[0]


async def _hash(auth: Auth, password: str, field: str) -> str:
    try:
        return await auth.hash_password(password)
    except Busy:
        raise TooBusy(field, "too many password operations at once; try again") from None


async def create(sys: System, who: Principal, auth: Auth, data: UserCreate) -> tuple[UserItem, str]:
    """A new account with a one-time password (returned once) that must be changed at the
    first login."""
    require(who, Action.MANAGE_USERS)
    password = generate_password()
    hashed = await _hash(auth, password, "username")
    try:
        user = await audit.audited(
            sys,
            lambda u: audit.entry(who, "user.create", f"user:{u.username}",
                                  after={"role": data.role, "group_ids": list(data.group_ids)}),
            lambda conn: create_user(
                conn,
                data.username,
                hashed,
                data.role,
                must_change_password=True,
                group_ids=tuple(data.group_ids),
                created_by=who.username,
            ),
        )  # fmt: skip
    except Conflict as exc:
        raise AlreadyExists("username", str(exc)) from None
    except NotFound as exc:
        raise InvalidInput("group_ids", str(exc)) from None
    return await get(sys, who, user.id), password


async def update(sys: System, who: Principal, user_id: int, data: UserUpdate) -> UserItem:
    """Change role, groups and/or state; the user's sessions end when anything changed."""
    require(who, Action.MANAGE_USERS)
    groups = None if data.group_ids is None else tuple(data.group_ids)

    def write(conn: Any) -> tuple[int, UserItem | None, UserItem | None]:
        old = list_users(conn, user_id)
        ended = update_user(
            conn, user_id, by=who.username, role=data.role, state=data.state, group_ids=groups
        )
        new = list_users(conn, user_id)
        return ended, old[0] if old else None, new[0] if new else None

    try:
        ended, _, _ = await audit.audited(
            sys,
            lambda r: audit.entry(who, "user.update", _user_target(r[2], user_id),
                                  before=_user_view(r[1]), after=_user_view(r[2]),
                                  detail=f"{r[0]} session(s) ended"),
            write,
        )  # fmt: skip
    except LastAdmin as exc:
        raise LastAdminRefused("role" if data.role else "state", str(exc)) from None
    except NotFound as exc:
        if "group" in str(exc):
            raise InvalidInput("group_ids", str(exc)) from None
        raise Missing(f"no user with id {user_id}") from None
    if ended or data.role or data.state or groups is not None:
        scope_changed(sys.db)
    return await get(sys, who, user_id)


async def unlock(sys: System, who: Principal, user_id: int) -> UserItem:
    require(who, Action.MANAGE_USERS)

    def write(conn: Any) -> str:
        unlock_user(conn, user_id, by=who.username)
        user = get_user_by_id(conn, user_id)
        return f"user:{user.username}" if user is not None else f"user_id:{user_id}"

    try:
        await audit.audited(sys, lambda target: audit.entry(who, "user.unlock", target), write)
    except NotFound:
        raise Missing(f"no user with id {user_id}") from None
    return await get(sys, who, user_id)


async def reset_password(sys: System, who: Principal, auth: Auth, user_id: int) -> str:
    """A new one-time password (must be changed at the next login); every session ends."""
    require(who, Action.MANAGE_USERS)
    user = await sys.db.run(get_user_by_id, user_id)
    if user is None:
        raise Missing(f"no user with id {user_id}")
    password = generate_password()
    hashed = await _hash(auth, password, "password")

    def reset(conn: Any) -> int:  # the password, and every API token with it
        set_password(conn, user.username, hashed, must_change=True, by=who.username)
        return revoke_user_tokens(conn, user.id, by=who.username)

    await audit.audited(
        sys, lambda n: audit.entry(who, "user.password.reset", f"user:{user.username}",
                                   after={"tokens_revoked": n}),
        reset,
    )  # fmt: skip
    scope_changed(sys.db)  # open relay sockets of the ended sessions close
    return password


async def change_password(
    sys: System, who: Principal, auth: Auth, data: PasswordChange, keep_family: str = ""
) -> None:
    """The user's own password change: the current password must be right (checked like a
    login: a wrong one counts towards the lockout and the address's delay), the new one must
    meet the policy. Every other session of the user ends (``keep_family``: the caller's,
    which the caller rotates)."""
    user = await sys.db.run(get_user_by_id, who.user_id) if who.user_id else None
    if user is None or user.state != "active":
        raise Missing("no such user")
    try:
        outcome = await auth.check_current_password(user, data.current_password, keep_family)
    except Busy:
        raise TooBusy("current_password", "too many password checks at once; try again") from None
    if outcome is Outcome.LOCKED:
        raise InvalidInput(
            "current_password", "too many wrong passwords: the account is locked for now"
        )
    if outcome is not Outcome.OK:
        raise InvalidInput("current_password", "the current password is wrong")
    settings = auth.settings
    problem = password_problem(
        data.new_password,
        min_length=settings.password_min_length,
        min_score=settings.password_min_score,
        avoid=(user.username,),
    )
    if problem is None and data.new_password == data.current_password:
        problem = "choose a password different from the current one"
    if problem is not None:
        raise InvalidInput("new_password", problem)
    hashed = await _hash(auth, data.new_password, "new_password")

    def change(conn: Any) -> int:  # the password, and the refresh families of the API tokens
        set_password(conn, user.username, hashed, by=user.username, keep_family=keep_family)
        return revoke_user_families(conn, user.id)

    await audit.audited(
        sys,
        lambda n: audit.entry(who, "user.password.change", f"user:{user.username}",
                              after={"refresh_families_ended": n}),
        change,
    )  # fmt: skip
    scope_changed(sys.db)


class SessionsNotForTokens(HandleError):
    """403: sessions are managed with a session, never with an API token (not even the
    owner's own: a token must not end the browser sessions of its owner)."""

    status = 403
    code = "insufficient_scope"

    def __init__(self) -> None:
        super().__init__("authorization", "an API token never reaches sessions; use the web UI")


def _no_token(who: Principal) -> None:
    if who.token_scope is not None:
        raise SessionsNotForTokens


async def sessions(sys: System, who: Principal, user_id: int) -> list[SessionItem]:
    _no_token(who)
    if user_id != who.user_id:
        require(who, Action.MANAGE_USERS)
    if await sys.db.run(get_user_by_id, user_id) is None:
        raise Missing(f"no user with id {user_id}")
    return await sys.db.run(list_sessions, user_id)


async def revoke(sys: System, who: Principal, user_id: int, session_id: int) -> None:
    _no_token(who)
    if user_id != who.user_id:
        require(who, Action.MANAGE_USERS)
    try:
        await audit.audited(
            sys, audit.entry(who, "session.revoke", f"session:{session_id}",
                             detail=f"user_id {user_id}"),
            revoke_session, user_id, session_id,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no session with id {session_id}") from None
    scope_changed(sys.db)


async def revoke_all(sys: System, who: Principal, user_id: int) -> int:
    _no_token(who)
    require(who, Action.MANAGE_USERS)
    user = await sys.db.run(get_user_by_id, user_id)
    if user is None:
        raise Missing(f"no user with id {user_id}")
    ended = await audit.audited(
        sys,
        lambda n: audit.entry(who, "session.revoke_all", f"user:{user.username}",
                              after={"sessions_ended": n}),
        revoke_sessions, user_id,
    )  # fmt: skip
    scope_changed(sys.db)
    return ended


async def reset_mfa(sys: System, who: Principal, auth: Auth, user_id: int) -> tuple[UserItem, int]:
    """Remove every second factor of a user (admins): the user's sessions end and the next
    login enrols again. Returns the user and the number of sessions ended."""
    require(who, Action.MANAGE_USERS)
    before = await sys.db.run(get_user_by_id, user_id)
    target = f"user:{before.username}" if before else f"user_id:{user_id}"

    def reset(conn: Any) -> tuple[int, int]:  # the factors, and every API token with them
        return reset_factors(conn, user_id, by=who.username), revoke_user_tokens(
            conn, user_id, by=who.username
        )

    try:
        ended, _ = await audit.audited(
            sys,
            lambda done: audit.entry(who, "user.mfa.reset", target,
                                     after={"tokens_revoked": done[1]}),
            reset,
        )  # fmt: skip
    except NotFound as exc:
        raise Missing(str(exc)) from None
    scope_changed(sys.db)
    return await get(sys, who, user_id), ended
