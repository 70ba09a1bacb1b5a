"""Second-factor pages (R-7.2): the login's second step (a code, or a WebAuthn assertion), the
enrolment page a user without a factor is confined to, Profile → Security (factors, recovery
codes, authenticators), re-authentication before dangerous actions, and the admins' reset of a
user's factors. The logic is ``web.mfa`` (factors) and ``web.auth`` (pending logins)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from storage import Conflict, NotFound, User, get_user_by_id
from storage.mfa import Credential, LastFactor, mark_session_mfa

from . import audit
from .auth import (
    MFA_COOKIE,
    REAUTH_NOTICE,
    SESSION_COOKIE,
    Busy,
    ReauthRequired,
    SecondStep,
    hash_token,
    recent_mfa,
    safe_next,
)
from .authz import scope_changed
from .errors import envelope
from .forms import fields
from .handle import Missing
from .mfa import RelyingParty, TotpEnrolment, WebAuthnRefused
from .models_io import path_id
from .pages import Base, Pages
from .services import principal, users

CHALLENGE_LIFETIME_S = 300.0
MAX_JSON = 64 * 1024
LAST_FACTOR = "Add another factor first: a second factor is mandatory."


@dataclass(frozen=True)
class MfaLoginPage:
    title: str
    error: str = ""
    webauthn: bool = False


@dataclass(frozen=True)
class SetupPage(Base):
    totp: TotpEnrolment | None = None
    credentials: list[Credential] = field(default_factory=list)
    error: str = ""
    enrolled: bool = False  # the user has a factor already (adding one more)


@dataclass(frozen=True)
class CodesPage(Base):
    codes: list[str] = field(default_factory=list)
    first: bool = False


@dataclass(frozen=True)
class SecurityPage(Base):
    totp: bool = False
    credentials: list[Credential] = field(default_factory=list)
    recovery_left: int = 0
    error: str = ""
    next: str = ""


def relying_party(request: Request, rp_id: str = "", origin: str = "") -> RelyingParty:
    """The configured relying party, else the one the request was addressed to."""
    host = request.url.hostname or "localhost"
    default_origin = f"{request.url.scheme}://{request.url.netloc}"
    return RelyingParty(rp_id or host, origin or default_origin)


class MfaPages:
    def __init__(self, pages: Pages, *, rp_id: str = "", origin: str = "") -> None:
        self.pages = pages
        self.auth = pages.auth
        self.mfa = pages.auth.mfa
        self.sys = pages.sys
        self.rp_id = rp_id
        self.origin = origin
        # Registration challenges of logged-in sessions: session id -> (challenge, deadline).
        self._challenges: dict[int, tuple[bytes, float]] = {}

    def _rp(self, request: Request) -> RelyingParty:
        return relying_party(request, self.rp_id, self.origin)

    # -- the login's second step ------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        pending = await self.auth.pending(request.cookies.get(MFA_COOKIE, ""))
        if pending is None:
            return RedirectResponse("/login", status_code=303)
        factors = await self.mfa.factors(pending.user_id)
        page = MfaLoginPage("Second factor", error, bool(factors.credentials))
        return self.pages.templates.TemplateResponse(
            request, "mfa_login.html", {"page": page}, status_code=status
        )

    async def login_code(self, request: Request) -> Response:
        form = fields(await request.form())
        token = request.cookies.get(MFA_COOKIE, "")
        address = request.client.host if request.client else ""
        try:
            step = await self.auth.second_step(token, form.get("code", ""), address)
        except Busy as exc:
            response = await self.login_form(
                request, "Too many attempts right now; wait a moment and try again.", 429
            )
            response.headers["retry-after"] = str(exc.retry_after)
            return response
        if not step.ok:
            if step.expired:
                response = RedirectResponse("/login", status_code=303)
                response.headers.append("set-cookie", self.auth.mfa_cookie("", max_age=0))
                return response
            return await self.login_form(request, step.message, 401)
        return await self._logged_in(request, step)

    async def _logged_in(self, request: Request, step: SecondStep) -> Response:
        assert step.user is not None
        response = RedirectResponse(self._target(step.user, step.next_path), status_code=303)
        await self._start(request, step.user, response, step.kind)
        return response

    def _target(self, user: User, next_path: str) -> str:
        return "/password" if user.must_change_password else safe_next(next_path)

    async def _start(self, request: Request, user: User, response: Response, kind: str) -> None:
        address = request.client.host if request.client else ""
        previous = request.cookies.get(SESSION_COOKIE, "")
        if previous:
            await self.auth.end_session(previous)
        token, _ = await self.auth.start_session(
            user,
            address,
            request.headers.get("user-agent", ""),
            mfa=True,
            audit_detail=f"second factor: {kind}",
        )
        response.headers.append("set-cookie", self.auth.session_cookie(token))
        response.headers.append("set-cookie", self.auth.mfa_cookie("", max_age=0))

    async def login_webauthn_options(self, request: Request) -> Response:
        token = request.cookies.get(MFA_COOKIE, "")
        pending = await self.auth.pending(token)
        if pending is None:
            return envelope(request, 400, "no_pending_login", "no login in progress; log in again")
        options, challenge = await self.mfa.authentication_options(
            self._rp(request), pending.user_id
        )
        await self.auth.set_challenge(token, challenge)
        return Response(options, media_type="application/json")

    async def login_webauthn(self, request: Request) -> Response:
        token = request.cookies.get(MFA_COOKIE, "")
        credential = await _json_text(request)
        address = request.client.host if request.client else ""
        if credential is None:
            return envelope(request, 422, "validation_error", "send the authenticator's answer")
        try:
            async with self.auth.throttle.turn(address) as source:
                pending = await self.auth.pending(token)
                if pending is None or pending.challenge is None:
                    return envelope(
                        request, 400, "no_pending_login", "no login in progress; log in again"
                    )
                try:
                    await self.mfa.authenticate(
                        self._rp(request), pending.user_id, pending.challenge, credential
                    )
                except WebAuthnRefused as exc:
                    self.auth.throttle.failed(source)
                    await self.auth.set_challenge(token, secrets.token_bytes(32))  # used up
                    named = await self.sys.db.run(get_user_by_id, pending.user_id)
                    target = f"user:{named.username}" if named else f"user_id:{pending.user_id}"
                    await audit.record(self.sys.db, audit.entry(
                        "anonymous", "auth.login", target, outcome="failed",
                        detail=f"security key refused: {exc}"))  # fmt: skip
                    return envelope(request, 401, "webauthn_refused", str(exc))
        except Busy as exc:
            return envelope(
                request, 429, "busy", f"too many attempts; retry in {exc.retry_after} s"
            )
        step = await self.auth.finish_second_step(token, "webauthn")
        if not step.ok or step.user is None:
            return envelope(request, 400, "no_pending_login", step.message)
        response = JSONResponse({"redirect": self._target(step.user, step.next_path)})
        await self._start(request, step.user, response, "webauthn")
        return response

    # -- enrolment --------------------------------------------------------------------------

    def _session(self, request: Request) -> Any:
        return request.scope["state"]["session"]

    async def setup(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = self._session(request)
        user = session.user
        factors = await self.mfa.factors(user.id)
        totp = await self.mfa.totp_enrolment(user.id, user.username)
        page = SetupPage(
            **self.pages.base(request, "Set up a second factor", "profile"),
            totp=totp,
            credentials=factors.credentials,
            error=error,
            enrolled=factors.any,
        )
        return self.pages.render(request, "mfa_setup.html", page, status)

    async def _stale(self, request: Request) -> bool:
        """Whether adding a factor needs a reauth first: the user has a factor already and the
        session did not prove one within REAUTH_WITHIN (a first enrolment needs none)."""
        session = self._session(request)
        return not recent_mfa(session) and await self.mfa.has_factor(session.user.id)

    async def confirm_totp(self, request: Request) -> Response:
        form = fields(await request.form())
        session = self._session(request)
        if await self._stale(request):
            target = "/security?" + urlencode({"next": "/mfa/setup", "notice": REAUTH_NOTICE})
            return RedirectResponse(target, status_code=303)
        what = _entry(session.user, "auth.mfa.enrol", after={"factor": "totp"})
        token = hash_token(request.scope["state"].get("session_token", ""))
        if not await self.mfa.confirm_totp(session.user.id, form.get("code", ""), what, token):
            return await self.setup(
                request, "That code is wrong or used already: enter the current code.", 422
            )
        return await self._enrolled(request, "the authenticator app")

    async def _enrolled(self, request: Request, what: str) -> Response:
        """A factor was added: the session counts as proven; recovery codes on the first."""
        session = self._session(request)
        await self.auth.mark_mfa(request.scope["state"].get("session_token", ""))
        factors = await self.mfa.factors(session.user.id)
        if factors.recovery_left:
            return self.pages.back("/security", f"Added {what}")
        codes = await self.mfa.new_recovery_codes(session.user.id, _first_codes(session.user))
        page = CodesPage(
            **self.pages.base(request, "Recovery codes", "profile"), codes=codes, first=True
        )
        return self.pages.render(request, "mfa_codes.html", page)

    def _forget_old_challenges(self) -> None:
        now = time.monotonic()
        for key, (_, deadline) in list(self._challenges.items()):
            if deadline < now:
                del self._challenges[key]

    async def webauthn_options(self, request: Request) -> Response:
        session = self._session(request)
        if await self._stale(request):
            raise ReauthRequired
        self._forget_old_challenges()
        options, challenge = await self.mfa.registration_options(
            self._rp(request), session.user.id, session.user.username
        )
        self._challenges[session.id] = (challenge, time.monotonic() + CHALLENGE_LIFETIME_S)
        return Response(options, media_type="application/json")

    async def webauthn_register(self, request: Request) -> Response:
        session = self._session(request)
        if await self._stale(request):
            raise ReauthRequired
        body = await _json_text(request)
        try:
            data = json.loads(body or "")
            name = str(data["name"]).strip()
            credential = json.dumps(data["credential"])
        except (ValueError, KeyError, TypeError):
            return envelope(request, 422, "validation_error", "send {name, credential}")
        if not 1 <= len(name) <= 64 or not name.isprintable():
            return envelope(request, 422, "validation_error", "name: 1 to 64 printable characters")
        challenge, deadline = self._challenges.pop(session.id, (b"", 0.0))
        if not challenge or deadline < time.monotonic():
            return envelope(request, 409, "challenge_expired", "start the registration again")
        try:
            what = _entry(
                session.user, "auth.mfa.enrol", after={"factor": "webauthn", "name": name}
            )
            token = hash_token(request.scope["state"].get("session_token", ""))
            await self.mfa.register(self._rp(request), session.user.id, challenge, credential,
                                    name, what, token)  # fmt: skip
        except WebAuthnRefused as exc:
            return envelope(request, 422, "webauthn_refused", str(exc))
        except Conflict as exc:
            return envelope(request, 409, "conflict", str(exc))
        await self.auth.mark_mfa(request.scope["state"].get("session_token", ""))
        factors = await self.mfa.factors(session.user.id)
        codes: list[str] = []
        if not factors.recovery_left:
            codes = await self.mfa.new_recovery_codes(session.user.id, _first_codes(session.user))
        return JSONResponse({"name": name, "recovery_codes": codes}, status_code=201)

    # -- Profile → Security -----------------------------------------------------------------

    async def security(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = self._session(request)
        factors = await self.mfa.factors(session.user.id)
        page = SecurityPage(
            **self.pages.base(request, "Security", "profile"),
            totp=factors.totp,
            credentials=factors.credentials,
            recovery_left=factors.recovery_left,
            error=error,
            next=safe_next(request.query_params.get("next", "")),
        )
        return self.pages.render(request, "security.html", page, status)

    async def regenerate_codes(self, request: Request) -> Response:
        session = self._session(request)
        what = _entry(session.user, "auth.mfa.recovery_codes", detail="new codes generated")
        codes = await self.mfa.new_recovery_codes(session.user.id, what)
        page = CodesPage(**self.pages.base(request, "Recovery codes", "profile"), codes=codes)
        return self.pages.render(request, "mfa_codes.html", page)

    async def remove_totp(self, request: Request) -> Response:
        session = self._session(request)
        try:  # refused in the removal's transaction, under the user's row lock
            await self.mfa.remove_totp(
                session.user.id,
                _entry(session.user, "auth.mfa.remove", before={"factor": "totp"}),
            )
        except LastFactor:
            return await self.security(request, LAST_FACTOR, 409)
        return self.pages.back("/security", "Authenticator app removed")

    async def remove_credential(self, request: Request) -> Response:
        session = self._session(request)
        form = fields(await request.form())
        wanted = form.get("credential_id", "")
        if not wanted.isdigit() or not 1 <= int(wanted) < 2**63:
            return await self.security(request, "No such security key.", 422)
        try:
            what = _entry(session.user, "auth.mfa.remove",
                          before={"factor": "webauthn", "id": int(wanted)})  # fmt: skip
            name = await self.mfa.remove_credential(session.user.id, int(wanted), what)
        except LastFactor:
            return await self.security(request, LAST_FACTOR, 409)
        except NotFound:
            return self.pages.back("/security", "That authenticator was removed already")
        return self.pages.back("/security", f"Security key {name} removed")

    async def reauth(self, request: Request) -> Response:
        """Prove the second factor again (a TOTP or recovery code) before a dangerous
        action; back to ``next``."""
        form = fields(await request.form())
        session = self._session(request)
        try:  # throttled per user (the session is the user's already), not per address
            async with self.auth.throttle.turn(f"reauth:{session.user.id}") as source:
                kind = await self.mfa.check_code(session.user.id, form.get("code", ""))
                if kind is None:
                    self.auth.throttle.failed(source)
        except Busy:
            return await self.security(request, "Too many attempts; wait a moment.", 429)
        if kind is None:
            await audit.record(
                self.sys.db,
                _entry(
                    session.user,
                    "auth.reauth",
                    outcome="failed",
                    detail="wrong or already used code",
                ),
            )
            return await self.security(request, "Wrong or already used code.", 422)
        token = hash_token(request.scope["state"].get("session_token", ""))
        await audit.audited(  # confirmed only together with its entry
            self.sys.db, _entry(session.user, "auth.reauth", detail=kind), mark_session_mfa, token
        )
        target = safe_next(form.get("next", "")) if form.get("next") else "/security"
        return self.pages.back(target, "Confirmed: you may go on for five minutes")

    # -- admins -----------------------------------------------------------------------------

    async def reset_user(self, request: Request) -> Response:
        try:
            user, ended = await users.reset_mfa(
                self.sys, principal(request), self.auth, path_id(request, "user_id")
            )
        except Missing:
            return self.pages.back("/users", "That user no longer exists")
        scope_changed(self.sys.db)
        return self.pages.back(
            "/users", f"Second factors of {user.username} reset; {ended} session(s) ended"
        )

    def routes(self) -> list[Route]:
        return [
            Route("/login/mfa", self.login_form, methods=["GET"]),
            Route("/login/mfa", self.login_code, methods=["POST"]),
            Route("/login/webauthn/options", self.login_webauthn_options, methods=["POST"]),
            Route("/login/webauthn", self.login_webauthn, methods=["POST"]),
            Route("/mfa/setup", self.setup, methods=["GET"]),
            Route("/mfa/totp", self.confirm_totp, methods=["POST"]),
            Route("/mfa/webauthn/options", self.webauthn_options, methods=["POST"]),
            Route("/mfa/webauthn", self.webauthn_register, methods=["POST"]),
            Route("/security", self.security, methods=["GET"]),
            Route("/security/recovery-codes", self.regenerate_codes, methods=["POST"]),
            Route("/security/totp/remove", self.remove_totp, methods=["POST"]),
            Route("/security/webauthn/remove", self.remove_credential, methods=["POST"]),
            Route("/reauth", self.reauth, methods=["POST"]),
            Route("/users/{user_id:int}/reset-mfa", self.reset_user, methods=["POST"]),
        ]


def _first_codes(user: User) -> audit.AuditEntry:
    return _entry(user, "auth.mfa.recovery_codes", detail="first codes generated")


def _entry(user: User, action: str, **kwargs: Any) -> audit.AuditEntry:
    name = f"user:{user.username}"
    return audit.entry(name, action, name, **kwargs)


async def _json_text(request: Request) -> str | None:
    body = await request.body()
    if not body or len(body) > MAX_JSON:
        return None
    try:
        return body.decode()
    except UnicodeDecodeError:
        return None
