"""Account pages: log in and out, the password change (forced at first login), the Profile
page (own password and sessions) and the Users page (admins: create, edit, disable, unlock,
reset password, end sessions). Every decision is the service layer's (``services.users``)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from storage import AuditWriteFailed, GroupItem, SessionItem, UserItem, delete_session

from . import audit
from .auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Busy,
    Outcome,
    hash_token,
    safe_next,
    same_token,
)
from .authz import Action, require, scope_changed
from .forms import fields
from .handle import HandleError, Missing
from .models import PasswordChange, UserCreate, UserUpdate
from .models_io import given, path_id, validate
from .pages import Base, Pages
from .services import groups, principal, sso, users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginPage:
    title: str
    login_token: str
    next: str
    error: str = ""
    username: str = ""


@dataclass(frozen=True)
class PasswordPage(Base):
    forced: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    min_length: int = 12


@dataclass(frozen=True)
class ProfilePage(PasswordPage):
    me: UserItem | None = None
    sessions: list[SessionItem] = field(default_factory=list)
    current_session: int = 0


@dataclass(frozen=True)
class UsersPage(Base):
    users: list[UserItem] = field(default_factory=list)
    groups: list[GroupItem] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    one_time: tuple[str, str] = ("", "")  # (user name, password) shown once
    sessions_of: UserItem | None = None
    sessions: list[SessionItem] = field(default_factory=list)


def _until(value: dt.datetime | None) -> str:
    """How long a lock lasts, before login (the user's zone is not known yet): the minutes
    left, and the end as a clock time labelled UTC (with its date when that is not today)."""
    if value is None:
        return "for now"
    now = dt.datetime.now(dt.UTC)
    end = value.astimezone(dt.UTC)
    minutes = max(1, -(-int((end - now).total_seconds()) // 60))
    clock = f"{end:%H:%M}" if end.date() == now.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"for {minutes} more minute{'s' if minutes != 1 else ''} (until {clock} UTC)"


def _group_ids(form: FormData) -> list[str]:
    return [str(v) for v in form.getlist("group_id") if str(v)][:1000]


class AccountPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.auth = pages.auth
        self.sys = pages.sys

    # -- login and logout -------------------------------------------------------------------

    async def login_form(
        self,
        request: Request,
        error: str = "",
        username: str = "",
        status: int = 200,
        retry_after: int = 0,
    ) -> Response:
        token = await self.auth.issue_login_token()
        page = LoginPage(
            "Log in", token, safe_next(request.query_params.get("next")), error, username
        )
        response = self.pages.templates.TemplateResponse(
            request,
            "login.html",
            {"page": page, "sso_button": await sso.login_button(self.sys)},
            status_code=status,
        )
        response.headers.append("set-cookie", self.auth.login_cookie(token))
        if retry_after:
            response.headers["retry-after"] = str(retry_after)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username", ""))
        sent = str(form.get("login_token", ""))
        fresh = same_token(sent, request.cookies.get(LOGIN_COOKIE, ""))
        if not fresh or not await self.auth.consume_login_token(sent):
            return await self.login_form(
                request, "The form expired; please try again.", username, 400
            )
        # A name no account can have (NUL, which PostgreSQL cannot store, or overlong) is a
        # wrong login like any other, without a database lookup.
        possible = "\x00" not in username and len(username) <= 200
        password = str(form.get("password", ""))[:4096]
        address = request.client.host if request.client else ""
        if not possible:
            return await self.login_form(request, "Wrong user name or password.", username, 401)
        try:
            result = await self.auth.login(username, password, address)
        except Busy as exc:
            return await self.login_form(
                request,
                "Too many login attempts right now; wait a moment and try again.",
                username,
                429,
                exc.retry_after,
            )
        if result.outcome is Outcome.WRONG or result.user is None:
            return await self.login_form(request, "Wrong user name or password.", username, 401)
        if result.outcome is Outcome.DISABLED:
            return await self.login_form(
                request, "This account is disabled; ask an administrator.", username, 403
            )
        if result.outcome is Outcome.LOCKED:
            return await self.login_form(
                request,
                f"This account is locked after too many wrong passwords "
                f"{_until(result.locked_until)}; an administrator can unlock it.",
                username,
                403,
            )
        agent = request.headers.get("user-agent", "")
        if await self.auth.mfa.has_factor(result.user.id):  # the second step, then a session
            pending = await self.auth.begin_pending(
                result.user, address, agent, safe_next(form.get("next"))
            )
            response = RedirectResponse("/login/mfa", status_code=303)
            response.headers.append("set-cookie", self.auth.mfa_cookie(pending))
            return response
        previous = request.cookies.get(SESSION_COOKIE, "")
        if previous:  # the browser's earlier session (of whichever user) ends: a new family
            await self.auth.end_session(previous)
        token, _ = await self.auth.start_session(
            result.user, address, agent, audit_detail="no second factor yet: enrolment only"
        )
        target = safe_next(form.get("next"))
        if result.user.must_change_password:
            target = "/password"
        response = RedirectResponse(target, status_code=303)
        response.headers.append("set-cookie", self.auth.session_cookie(token))
        return response

    async def logout(self, request: Request) -> Response:
        token = request.scope["state"].get("session_token", "")
        if token:
            session = request.scope["state"]["session"]
            name = f"user:{session.user.username}"
            # The session ends whatever happens to its entry: logging out never fails closed.
            await self.sys.db.run(delete_session, hash_token(token))
            scope_changed(self.sys.db)  # the session's relay sockets close
            try:
                await audit.record(self.sys.db, audit.entry(name, "auth.logout", name))
            except AuditWriteFailed as exc:
                log.error("the logout of %s is not recorded in the audit log: %s", name, exc)
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", self.auth.session_cookie("", max_age=0))
        return response

    # -- own password -----------------------------------------------------------------------

    def _forced(self, request: Request) -> bool:
        session = request.scope["state"]["session"]
        return bool(session.user.must_change_password)

    async def password_form(
        self, request: Request, errors: dict[str, str] | None = None, status: int = 200
    ) -> Response:
        page = PasswordPage(
            **self.pages.base(request, "Change password", "profile"),
            forced=self._forced(request),
            errors=errors or {},
            min_length=self.auth.settings.password_min_length,
        )
        return self.pages.render(request, "password.html", page, status)

    async def change_password(self, request: Request) -> Response:
        form = fields(await request.form())
        forced = self._forced(request)
        session = request.scope["state"]["session"]
        try:
            data = validate(
                PasswordChange,
                {k: form.get(k, "") for k in ("current_password", "new_password")},
            )
            await users.change_password(
                self.sys, principal(request), self.auth, data, keep_family=session.family_id
            )
        except HandleError as exc:
            if form.get("from") == "profile" and not forced:
                return await self.profile(request, exc.fields, exc.status)
            return await self.password_form(request, exc.fields, exc.status)
        # A privilege change: this browser gets a new token of the same family; every other
        # session of the user has ended.
        token = await self.auth.rotate(request.scope["state"].get("session_token", ""))
        target = "/profile" if form.get("from") == "profile" else "/"
        response = self.pages.back(target, "Password changed; your other sessions have ended")
        if token:
            response.headers.append("set-cookie", self.auth.session_cookie(token))
        return response

    # -- profile ----------------------------------------------------------------------------

    async def profile(
        self, request: Request, errors: dict[str, str] | None = None, status: int = 200
    ) -> Response:
        who = principal(request)
        session = request.scope["state"]["session"]
        page = ProfilePage(
            **self.pages.base(request, "Profile", "profile"),
            errors=errors or {},
            min_length=self.auth.settings.password_min_length,
            me=await users.get(self.sys, who, who.user_id),
            sessions=await users.sessions(self.sys, who, who.user_id),
            current_session=session.id,
        )
        return self.pages.render(request, "profile.html", page, status)

    async def revoke_own_session(self, request: Request) -> Response:
        who = principal(request)
        try:
            await users.revoke(self.sys, who, who.user_id, path_id(request, "session_id"))
        except Missing:
            return self.pages.back("/profile", "That session had ended already")
        return self.pages.back("/profile", "Session ended")

    # -- users (admins) ---------------------------------------------------------------------

    async def users(
        self,
        request: Request,
        *,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        one_time: tuple[str, str] = ("", ""),
        status: int = 200,
    ) -> Response:
        who = principal(request)
        require(who, Action.MANAGE_USERS)
        sessions_of, sessions = None, []
        wanted = request.query_params.get("sessions", "")
        if wanted.isdigit() and 1 <= int(wanted) < 2**63:
            try:
                sessions_of = await users.get(self.sys, who, int(wanted))
                sessions = await users.sessions(self.sys, who, int(wanted))
            except Missing:
                sessions_of = None
        page = UsersPage(
            **self.pages.base(request, "Users", "users"),
            users=await users.all_users(self.sys, who),
            groups=await groups.all_groups(self.sys, who),
            errors=errors or {},
            form=form or {},
            one_time=one_time,
            sessions_of=sessions_of,
            sessions=sessions,
        )
        return self.pages.render(request, "users.html", page, status)

    async def create_user(self, request: Request) -> Response:
        raw = await request.form()
        form = fields(raw)
        try:
            data = validate(UserCreate, given(form) | {"group_ids": _group_ids(raw)})
            user, password = await users.create(self.sys, principal(request), self.auth, data)
        except HandleError as exc:
            return await self.users(request, errors=exc.fields, form=form, status=exc.status)
        return await self.users(request, one_time=(user.username, password), status=201)

    async def update_user(self, request: Request) -> Response:
        raw = await request.form()
        form = fields(raw)
        user_id = path_id(request, "user_id")
        values: dict[str, Any] = given({k: form.get(k, "") for k in ("role", "state")})
        if form.get("groups_given"):
            values["group_ids"] = _group_ids(raw)
        try:
            data = validate(UserUpdate, values)
            user = await users.update(self.sys, principal(request), user_id, data)
        except HandleError as exc:
            return await self.users(request, errors={"edit": exc.message}, status=exc.status)
        except Missing:
            return self.pages.back("/users", "That user no longer exists")
        return self.pages.back("/users", f"User {user.username} saved")

    async def unlock_user(self, request: Request) -> Response:
        try:
            user = await users.unlock(self.sys, principal(request), path_id(request, "user_id"))
        except Missing:
            return self.pages.back("/users", "That user no longer exists")
        return self.pages.back("/users", f"User {user.username} unlocked")

    async def reset_password(self, request: Request) -> Response:
        who = principal(request)
        user_id = path_id(request, "user_id")
        try:
            user = await users.get(self.sys, who, user_id)
            password = await users.reset_password(self.sys, who, self.auth, user_id)
        except Missing:
            return self.pages.back("/users", "That user no longer exists")
        except HandleError as exc:
            return await self.users(request, errors={"edit": exc.message}, status=exc.status)
        return await self.users(request, one_time=(user.username, password))

    async def revoke_sessions(self, request: Request) -> Response:
        try:
            ended = await users.revoke_all(
                self.sys, principal(request), path_id(request, "user_id")
            )
        except Missing:
            return self.pages.back("/users", "That user no longer exists")
        return self.pages.back("/users", f"{ended} session(s) ended")

    async def revoke_session(self, request: Request) -> Response:
        user_id = path_id(request, "user_id")
        try:
            await users.revoke(
                self.sys, principal(request), user_id, path_id(request, "session_id")
            )
        except Missing:
            return self.pages.back(f"/users?sessions={user_id}", "That session had ended")
        return self.pages.back(f"/users?sessions={user_id}", "Session ended")

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/password", self.password_form, methods=["GET"]),
            Route("/password", self.change_password, methods=["POST"]),
            Route("/profile", self.profile, methods=["GET"]),
            Route(
                "/profile/sessions/{session_id:int}/revoke",
                self.revoke_own_session,
                methods=["POST"],
            ),
            Route("/users", self.users, methods=["GET"]),
            Route("/users", self.create_user, methods=["POST"]),
            Route("/users/{user_id:int}", self.update_user, methods=["POST"]),
            Route("/users/{user_id:int}/unlock", self.unlock_user, methods=["POST"]),
            Route("/users/{user_id:int}/reset-password", self.reset_password, methods=["POST"]),
            Route("/users/{user_id:int}/revoke-sessions", self.revoke_sessions, methods=["POST"]),
            Route(
                "/users/{user_id:int}/sessions/{session_id:int}/revoke",
                self.revoke_session,
                methods=["POST"],
            ),
        ]
