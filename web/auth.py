"""Authentication: local accounts (Argon2id), login throttling and lockout, server-side
sessions with rotation, CSRF protection.

Every request except the health check, static assets and the login page needs a session
(cookie ``pm_session``: HttpOnly, Secure on HTTPS, SameSite=Strict). The session token is stored
only as a SHA-256 hash. State-changing requests must carry the session's CSRF token: the
``X-CSRF-Token`` header (API, JavaScript) or a ``csrf_token`` form field (HTML forms). WebSocket
upgrades must come from our own origin. A user who must change their password reaches only the
change-password page (and log out) until they have.

Second factor (R-7.2, ``web.mfa``): a correct password of a user with a factor does not start a
session; it starts a *pending login* (cookie ``pm_mfa``, path /login, five minutes, single use,
``MAX_CODE_ATTEMPTS`` codes, each wrong one counted on the address's throttle like a wrong
password) that the second step (a TOTP code, a recovery code or a WebAuthn assertion) turns into
a session. A user without a factor gets a session that reaches only the enrolment pages
(``ENROL_PATHS``) until one is enrolled. A session remembers when it last proved a factor
(``Session.mfa_at``); dangerous actions need that within ``REAUTH_WITHIN``
(``require_recent_mfa``: 403 ``reauth_required`` otherwise).

Logins (``Auth.login``) pass two gates before any Argon2 work: the source address's turn (one
attempt at a time per address, at most ``MAX_WAITING_PER_ADDRESS`` waiting; after failures an
exponential delay (failures decay one per five minutes; a successful login does not clear
them), waited out when short and refused with the seconds left when longer) and the Argon2
limiter (``auth.hash_concurrency`` at once,
``auth.hash_queue`` waiting); beyond either bound the answer is ``Busy`` (429) at once. Waiting
for a turn holds no hashing slot, so a flood from one address cannot starve the others.
Errors: ``Busy``.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import argon2
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ca import Sealer
from settings import AuthSettings
from storage import (
    Database,
    Session,
    StorageError,
    User,
    consume_login_token,
    create_session,
    delete_session,
    issue_login_token,
    load_session,
    login_record,
    prune_sessions,
    record_failed_login,
    record_login,
    revoke_family,
    rotate_session,
    run_audited,
)
from storage.mfa import (
    PendingLogin,
    attempt_pending,
    consume_pending,
    create_pending,
    load_pending,
    mark_session_mfa,
    prune_pending,
    set_pending_challenge,
)
from storage.users import family_address, get_user_by_id

from . import audit
from .handle import HandleError
from .mfa import Mfa
from .middleware import deny_websocket
from .tokens import Tokens, bearer_of

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_COOKIE = "pm_session"
LOGIN_COOKIE = "pm_login"
MFA_COOKIE = "pm_mfa"
# The CRL and enrolment are for agents, which have no session (agent-api §7.1, §7.3; issue 14).
PUBLIC_PREFIXES = ("/static/", "/api/v1/enroll/status/")
PUBLIC_PATHS = frozenset(
    {
        "/api/v1/health", "/login", "/favicon.ico", "/api/v1/pki/crl.pem", "/api/v1/enroll",
        "/api/v1/pki/repo-config", "/login/mfa", "/login/webauthn/options", "/login/webauthn",
        # API token → access JWT exchange and its public keys (web.tokens_api): no session
        "/api/v1/auth/token", "/api/v1/auth/jwks.json",
        "/sso/login", "/sso/callback",  # single sign-on (web.sso_pages): no session yet
    }
)  # fmt: skip
# What a user who must change their password may still reach.
CHANGE_PATHS = frozenset({"/password", "/logout", "/api/v1/profile/password"})
# What a user without a second factor may still reach (besides CHANGE_PATHS).
ENROL_PATHS = CHANGE_PATHS | frozenset(
    {"/mfa/setup", "/mfa/totp", "/mfa/webauthn/options", "/mfa/webauthn"}
)
PENDING_LIFETIME = dt.timedelta(minutes=5)
MAX_CODE_ATTEMPTS = 5
REAUTH_WITHIN = dt.timedelta(minutes=5)
# Dangerous requests that need a second factor proven within REAUTH_WITHIN (besides reboots of
# many hosts at once, which the jobs service checks with ``require_recent_mfa``): user and role
# changes, resetting a user's password or factors, unlocking a user, revoking a certificate,
# creating an API token, changing single sign-on (provider, claim mappings, identity links),
# new recovery codes or removing a factor (adding one is checked by web.mfa_pages when the
# user has one already).
REAUTH_ROUTES = re.compile(
    r"^(POST|PATCH) (/api/v1)?/users(/\d+(/reset-password|/reset-mfa|/unlock)?)?$"
    r"|^POST (/api/v1)?/certificates/revoke$"
    r"|^POST (/api/v1)?/tokens$"
    r"|^POST /settings/sso/(save|mappings(/delete)?|identities(/delete)?)$"
    r"|^POST /api/v1/users/\d+/sso-identities(/unlink)?$"
    # own factors: fresh recovery codes would pass /reauth; removing one (F12m #1)
    r"|^POST /security/(recovery-codes|totp/remove|webauthn/remove)$"
)
# Whether the current request's session proved a second factor within REAUTH_WITHIN, and
# ``auth.reauth_reboot_hosts`` (set by AuthMiddleware; requests without a session pass; a
# bearer credential never counts as a recent second factor).
_recent_mfa: ContextVar[tuple[bool, int]] = ContextVar("recent_mfa", default=(True, 0))
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM = 1024 * 1024
MAX_WAITING_PER_ADDRESS = 4
LOGIN_TOKEN_LIFETIME = dt.timedelta(hours=1)

_hasher = argon2.PasswordHasher()  # Argon2id, library defaults (64 MiB, t=3, p=4)
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


class Busy(Exception):
    """Too many password checks are running or waiting (for this address or overall): 429."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many login attempts at once; try again in a moment")
        self.retry_after = max(1, round(retry_after))


def throttle_delay(failures: int, cap: float) -> float:
    """Seconds an address waits before its next attempt after ``failures`` failed logins in a
    row: none for the first two (typos), then 0.5 s doubling, at most ``cap``."""
    if failures < 3:
        return 0.0
    return float(min(cap, 0.5 * 2 ** min(failures - 3, 30)))


@dataclass
class _Source:
    failures: int = 0
    not_before: float = 0.0
    last_failure: float = 0.0  # when the newest counted failure happened (or decayed)
    attempts: int = 0  # in its turn or waiting for it
    lock: trio.Lock = field(default_factory=trio.Lock)


class Throttle:
    """Per-source-address login turns: one attempt at a time per address, after its delay."""

    MAX_ADDRESSES = 50_000
    FORGET_AFTER = 3600.0

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._sources: dict[str, _Source] = {}

    @asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[_Source]:
        """Wait for ``address``'s turn, holding nothing else: a delay of at most ``MAX_WAIT``
        seconds is waited out, a longer one is ``Busy`` at once (429 with the seconds left, so
        no connection is held for long); so is a turn with too many attempts waiting."""
        source = self._sources.get(address)
        if source is None:
            self._forget_idle()
            source = self._sources[address] = _Source()
        if source.failures and trio.current_time() - source.not_before > self.FORGET_AFTER:
            self.forget(source)  # an hour without a failure: a clean address again
        self._decay(source)
        self._refuse_if_delayed(source)
        if source.attempts > MAX_WAITING_PER_ADDRESS:  # one in its turn, the rest waiting
            raise Busy(1.0)
        source.attempts += 1
        try:
            async with source.lock:
                self._refuse_if_delayed(source)  # the attempt before this one may have failed
                await trio.sleep_until(source.not_before)
                yield source
        finally:
            source.attempts -= 1
            if source.failures == 0 and source.attempts == 0:
                self._sources.pop(address, None)

    MAX_WAIT = 1.0

    def _refuse_if_delayed(self, source: _Source) -> None:
        left = source.not_before - trio.current_time()
        if left > self.MAX_WAIT:
            raise Busy(left)

    def failures(self, address: str) -> int:
        """The failed logins counted against ``address`` now (after decay)."""
        source = self._sources.get(address)
        if source is None:
            return 0
        self._decay(source)
        return source.failures

    DECAY_EVERY = 300.0  # one failure forgiven per five minutes without one

    def _decay(self, source: _Source) -> None:
        """Failures age out (one per ``DECAY_EVERY`` seconds since the last counted one);
        a successful login does not clear them, so an account holder cannot spray other
        accounts' passwords at full speed between logins of their own."""
        if not source.failures:
            return
        steps = int((trio.current_time() - source.last_failure) // self.DECAY_EVERY)
        if steps <= 0:
            return
        source.failures = max(0, source.failures - steps)
        source.last_failure += steps * self.DECAY_EVERY
        if source.failures == 0:
            source.not_before = 0.0

    def failed(self, source: _Source) -> None:
        self._decay(source)
        source.failures += 1
        source.last_failure = trio.current_time()
        source.not_before = trio.current_time() + throttle_delay(source.failures, self.cap)

    @staticmethod
    def forget(source: _Source) -> None:
        source.failures, source.not_before = 0, 0.0

    def _forget_idle(self) -> None:
        if len(self._sources) < self.MAX_ADDRESSES:
            return
        now = trio.current_time()
        for address, source in list(self._sources.items()):
            if source.attempts == 0 and source.not_before < now:
                del self._sources[address]


class HashLimiter:
    """Argon2 work in worker threads: ``concurrency`` at once, ``queue`` waiting, then ``Busy``.

    Checks from addresses that have failed recently (``suspect``) first pass a lane of their own
    with ``concurrency - 1`` places (at least one), and start hashing only while no check from a
    clean address waits or runs: however many addresses a flood comes from, a login from a
    clean address waits at most for the suspect checks already hashing, not for the flood."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._limiter = trio.CapacityLimiter(concurrency)
        self._suspects = trio.CapacityLimiter(max(1, concurrency - 1))
        self.queue = queue
        self._clean = 0  # clean checks waiting or running
        self._no_clean = trio.Event()
        self._no_clean.set()

    async def run(self, fn: Callable[..., T], *args: Any, suspect: bool = False) -> T:
        if suspect:
            lane = self._suspects.statistics()
            if lane.tasks_waiting >= self.queue and not self._suspects.available_tokens:
                raise Busy(1.0)
            async with self._suspects:
                while self._clean:  # clean checks go first (a suspect one already hashing
                    await self._no_clean.wait()  # finishes: threads cannot be preempted)
                return await self._run(fn, *args)
        if self._clean == 0:
            self._no_clean = trio.Event()
        self._clean += 1
        try:
            return await self._run(fn, *args)
        finally:
            self._clean -= 1
            if self._clean == 0:
                self._no_clean.set()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if (
            self._limiter.statistics().tasks_waiting >= self.queue
            and not self._limiter.available_tokens
        ):
            raise Busy(1.0)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def statistics(self) -> trio.CapacityLimiterStatistics:
        return self._limiter.statistics()


class Outcome(enum.Enum):
    OK = "ok"
    WRONG = "wrong"  # unknown user or wrong password: the same answer either way
    LOCKED = "locked"  # the right password, but too many wrong ones before it
    DISABLED = "disabled"  # the right password of a disabled account


@dataclass(frozen=True)
class LoginResult:
    outcome: Outcome
    user: User | None = None
    locked_until: dt.datetime | None = None


class ReauthRequired(HandleError):
    """A dangerous action without a second factor proven in the last five minutes: 403."""

    status = 403
    code = "reauth_required"

    def __init__(self) -> None:
        super().__init__(
            "reauth", "confirm with your authenticator code first (POST /reauth), then retry"
        )


def recent_mfa(session: Session | None) -> bool:
    if session is None:
        return True
    at = session.mfa_at
    return at is not None and dt.datetime.now(dt.UTC) - at <= REAUTH_WITHIN


def require_recent_mfa(*, reboot_hosts: int | None = None) -> None:
    """``ReauthRequired`` unless the current request's session proved a second factor within
    ``REAUTH_WITHIN`` (services call this; requests without a session pass). With
    ``reboot_hosts``: only when that is more than ``auth.reauth_reboot_hosts``."""
    recent, reboot_limit = _recent_mfa.get()
    if reboot_hosts is not None and reboot_hosts <= reboot_limit:
        return
    if not recent:
        raise ReauthRequired


@dataclass(frozen=True)
class SecondStep:
    """The outcome of a second-factor attempt on a pending login."""

    ok: bool
    message: str = ""
    user: User | None = None
    next_path: str = "/"
    kind: str = ""  # totp, recovery or webauthn
    expired: bool = False  # the pending login is gone: the password must be given again


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


class Auth:
    """Password checks and sessions (see the module docstring for the login gates)."""

    def __init__(
        self,
        db: Database,
        *,
        secure_cookies: bool = True,
        settings: AuthSettings | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        """``sealer`` seals TOTP secrets (``ca.Sealer.for_data_dir``); without one a key lives
        only as long as this object (tests)."""
        self.db = db
        self.mfa = Mfa(db, sealer or Sealer(secrets.token_bytes(32)))
        self.secure_cookies = secure_cookies
        self.settings = settings = settings or AuthSettings()
        self.session_lifetime = dt.timedelta(hours=settings.session_hours)
        self.idle_timeout = dt.timedelta(minutes=settings.idle_minutes)
        self.hashing = HashLimiter(settings.hash_concurrency, settings.hash_queue)
        self.throttle = Throttle(settings.throttle_max_s)

    async def hash_password(self, password: str) -> str:
        """The Argon2id hash (``Busy`` when the hashing queue is full)."""
        return await self.hashing.run(_hasher.hash, password)

    async def verify_password(self, user: User, password: str) -> bool:
        return await self.hashing.run(_verify, user.password_hash, password)

    async def login(
        self, username: str, password: str, address: str, *, action: str = "auth.login"
    ) -> LoginResult:
        """Check a login. Waits for the address's turn, then for a hashing slot; raises
        ``Busy`` instead of waiting when either queue is full. A locked or disabled account is
        reported only after its correct password (no user enumeration); wrong passwords count
        towards the lockout even while locked."""
        name = username.strip().lower()
        async with self.throttle.turn(address) as source:
            record = await self.db.run(login_record, name)
            stored = record.user.password_hash if record else _DUMMY_HASH  # same work either way
            was_locked = record.locked_until if record else None
            suspect = source.failures > 0
            ok = await self.hashing.run(_verify, stored, password, suspect=suspect)
            if record is None or not ok:
                self.throttle.failed(source)
                lock_for = dt.timedelta(minutes=self.settings.lockout_minutes)
                threshold = self.settings.lockout_threshold
                # The same statement for an unknown user (an id no row has: it updates
                # nothing), so both answers cost the same database round trip.
                user_id = record.user.id if record is not None else 0
                until = await audit.audited(
                    self.db,
                    lambda until: audit.entry(
                        "anonymous", action, f"user:{name[:64]}", outcome="failed",
                        detail="wrong user name or password" + _locked_note(until, was_locked),
                    ),
                    record_failed_login, user_id, threshold, lock_for,
                )  # fmt: skip
                if until is not None and until > dt.datetime.now(dt.UTC):
                    log.warning("login: account %r locked until %s", name, until)
                return LoginResult(Outcome.WRONG)
            # A success does not clear the address's failures: they decay with time.
        user = record.user
        target = f"user:{user.username}"
        if user.state != "active":
            await audit.record(
                self.db,
                audit.entry(
                    "anonymous", action, target, outcome="denied", detail="account disabled"
                ),
            )
            return LoginResult(Outcome.DISABLED, user)
        if record.locked_until is not None and record.locked_until > dt.datetime.now(dt.UTC):
            await audit.record(
                self.db,
                audit.entry(
                    "anonymous",
                    action,
                    target,
                    outcome="denied",
                    detail=f"account locked until {record.locked_until:%Y-%m-%d %H:%M:%S%z}",
                ),
            )
            return LoginResult(Outcome.LOCKED, user, record.locked_until)
        await self.db.run(record_login, user.id)
        return LoginResult(Outcome.OK, user)

    async def check_current_password(self, user: User, password: str, family_id: str) -> Outcome:
        """A logged-in user's current password (before a change), checked like a login: it
        waits for the turn of the address the session logged in from (the user's own turn
        when unknown), and a wrong one counts towards the address's delay and the account's
        lockout; a locked account is refused even with the right password."""
        address = await self.db.run(family_address, family_id) if family_id else ""
        result = await self.login(
            user.username, password, address or f"user:{user.id}", action="auth.password_check"
        )
        return result.outcome

    async def check_password(self, username: str, password: str) -> User | None:
        """The user when the login succeeds (any address, for callers without one)."""
        result = await self.login(username, password, "")
        return result.user if result.outcome is Outcome.OK else None

    async def start_session(
        self,
        user: User,
        address: str = "",
        user_agent: str = "",
        *,
        mfa: bool = False,
        audit_detail: str | None = None,
    ) -> tuple[str, str]:
        """A new session (a new family): (token, csrf token). ``mfa``: a second factor was
        proven for it (the login's second step, or an SSO identity provider's); without,
        the session reaches only the enrolment pages. ``audit_detail``: audit the login
        (``auth.login`` ok) in the session's transaction."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = dt.datetime.now(dt.UTC) + self.session_lifetime
        what = None
        if audit_detail is not None:
            what = audit.entry(f"user:{user.username}", "auth.login", f"user:{user.username}",
                               detail=audit_detail)  # fmt: skip
        await run_audited(
            self.db,
            what,
            lambda c: create_session(
                c, hash_token(token), user.id, csrf, expires, address, user_agent, mfa=mfa
            ),
        )
        return token, csrf

    async def mark_mfa(self, token: str) -> None:
        """The session of ``token`` has just proved a second factor."""
        await self.db.run(mark_session_mfa, hash_token(token))

    # -- the second step of a login ---------------------------------------------------------

    async def begin_pending(self, user: User, address: str, user_agent: str, next_path: str) -> str:
        """A pending login after a correct password; returns its token (cookie ``pm_mfa``)."""
        token = secrets.token_urlsafe(32)
        expires = dt.datetime.now(dt.UTC) + PENDING_LIFETIME
        await self.db.run(lambda c: create_pending(c, hash_token(token), user.id, expires,
                                                   address=address, user_agent=user_agent,
                                                   next_path=next_path))  # fmt: skip
        return token

    async def pending(self, token: str) -> PendingLogin | None:
        return await self.db.run(load_pending, hash_token(token)) if token else None

    async def set_challenge(self, token: str, challenge: bytes) -> bool:
        return await self.db.run(set_pending_challenge, hash_token(token), challenge)

    async def second_step(self, token: str, code: str, address: str) -> SecondStep:
        """Check a code against a pending login (in the address's throttle turn; a wrong code
        counts like a wrong password). On success the pending login is consumed."""
        if not token:
            return SecondStep(False, "The login expired; please log in again.", expired=True)
        async with self.throttle.turn(address) as source:
            pending = await self.db.run(attempt_pending, hash_token(token), MAX_CODE_ATTEMPTS)
            if pending is None:
                return SecondStep(False, "The login expired or had too many wrong codes; "
                                  "please log in again.", expired=True)  # fmt: skip
            kind = await self.mfa.check_code(pending.user_id, code)
            if kind is None:
                self.throttle.failed(source)
                log.warning("login: wrong second-factor code for user %d", pending.user_id)
                named = await self.db.run(get_user_by_id, pending.user_id)
                target = f"user:{named.username}" if named else f"user_id:{pending.user_id}"
                await audit.record(self.db, audit.entry(
                    "anonymous", "auth.login", target, outcome="failed",
                    detail="wrong or replayed second-factor code"))  # fmt: skip
                left = MAX_CODE_ATTEMPTS - pending.attempts
                if left <= 0:
                    await self.db.run(consume_pending, hash_token(token))
                    return SecondStep(False, "Wrong code, and no attempts left; please log in "
                                      "again.", expired=True)  # fmt: skip
                return SecondStep(False, f"Wrong or already used code ({left} attempt(s) left).")
        return await self.finish_second_step(token, kind)

    async def finish_second_step(self, token: str, kind: str) -> SecondStep:
        """Consume the pending login (single use) once its second factor was proven."""
        pending = await self.db.run(consume_pending, hash_token(token))
        if pending is None:
            return SecondStep(False, "The login expired; please log in again.", expired=True)
        user = await self.db.run(get_user_by_id, pending.user_id)
        if user is None or user.state != "active":
            return SecondStep(False, "This account is disabled; ask an administrator.",
                              expired=True)  # fmt: skip
        record = await self.db.run(login_record, user.username)  # locked meanwhile (F12m #8)
        until = record.locked_until if record is not None else None
        if until is not None and until > dt.datetime.now(dt.UTC):
            return SecondStep(False, "This account is locked; try again later.",
                              expired=True)  # fmt: skip
        return SecondStep(True, user=user, next_path=pending.next_path, kind=kind)

    async def rotate(self, token: str) -> str | None:
        """Replace ``token`` by a new one of the same family (after a privilege change); None
        when the session is gone. The CSRF token is kept (open pages stay usable)."""
        session = await self.session(token)
        if session is None:
            return None
        new = secrets.token_urlsafe(32)
        rotated = await self.db.run(
            rotate_session, hash_token(token), hash_token(new), session.csrf_token
        )
        return new if rotated else None

    async def session(self, token: str) -> Session | None:
        """The live session of ``token``; None when unknown or ended. Presenting a rotated
        token revokes its whole family (it was copied)."""
        if not token:
            return None
        session = await self.db.run(load_session, hash_token(token), self.idle_timeout)
        if session is not None and session.rotated:
            ended = await self.db.run(revoke_family, session.family_id)
            log.warning("a rotated session token of %r was reused: %d session(s) of its family "
                        "revoked", session.user.username, ended)  # fmt: skip
            return None
        return session

    async def end_session(self, token: str) -> None:
        await self.db.run(delete_session, hash_token(token))

    async def issue_login_token(self) -> str:
        token = secrets.token_urlsafe(24)
        expires = dt.datetime.now(dt.UTC) + LOGIN_TOKEN_LIFETIME
        await self.db.run(issue_login_token, hash_token(token), expires)
        return token

    async def consume_login_token(self, token: str) -> bool:
        """True once per issued, unexpired login-form token."""
        return bool(token) and await self.db.run(consume_login_token, hash_token(token))

    async def prune(self) -> int:
        await self.db.run(prune_pending)
        return await self.db.run(prune_sessions, self.idle_timeout)

    async def prune_periodically(
        self,
        interval: float = 300.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Delete expired sessions and login-form tokens every ``interval`` seconds (drift-free)
        until cancelled; a database outage skips a round."""
        task_status.started()
        deadline = trio.current_time()
        while True:
            deadline += interval
            await trio.sleep_until(deadline)
            try:
                pruned = await self.prune()
            except StorageError as exc:
                log.warning("session pruning skipped: %s", exc)
                continue
            if pruned:
                log.info("pruned %d expired session(s)", pruned)

    def session_cookie(self, token: str, *, max_age: int | None = None) -> str:
        parts = [f"{SESSION_COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    def mfa_cookie(self, value: str, *, max_age: int = 300) -> str:
        parts = [f"{MFA_COOKIE}={value}", "Path=/login", "HttpOnly", "SameSite=Strict",
                 f"Max-Age={max_age}"]  # fmt: skip
        if self.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    def login_cookie(self, value: str) -> str:
        parts = [
            f"{LOGIN_COOKIE}={value}",
            "Path=/login",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=3600",
        ]
        if self.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)


def cookies_of(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                continue
    return {k: m.value for k, m in jar.items()}


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def same_token(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


class AuthMiddleware:
    """Loads the session into ``scope["state"]["session"]``; refuses what needs one."""

    def __init__(self, app: ASGIApp, auth: Auth, tokens: Tokens | None = None) -> None:
        self.app = app
        self.auth = auth
        self.tokens = tokens  # bearer credentials (web.tokens); None: sessions only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        if is_public(path):  # no database round trip for health checks and static files
            state["session"], state["session_token"] = None, ""
            await self.app(scope, receive, send)
            return
        # -- bearer hook (API tokens, access JWTs): no cookie, no CSRF; web.tokens decides --
        credential = bearer_of(scope) if self.tokens is not None else None
        if credential is not None and self.tokens is not None:
            # a token proves no second factor: what needs a recent one is refused to it
            bearer = _recent_mfa.set((False, self.auth.settings.reauth_reboot_hosts))
            try:
                await self.tokens.admit(scope, receive, send, self.app, credential)
            finally:
                _recent_mfa.reset(bearer)
            return
        # -- end of bearer hook --
        token = cookies_of(scope).get(SESSION_COOKIE, "")
        session = await self.auth.session(token) if token else None
        state["session"] = session
        state["session_token"] = token if session else ""
        if scope["type"] == "websocket":
            if session is None:
                await deny_websocket(scope, send, 401, "unauthorized", "log in first")
                return
            if (
                session.user.must_change_password
                or session.mfa_at is None
                or not _same_origin(scope)
            ):
                await deny_websocket(
                    scope, send, 403, "forbidden", "same-origin session with a changed password"
                )
                return
            await self.app(scope, receive, send)
            return
        if session is None:
            await _refuse_unauthenticated(scope, send)
            return
        if session.mfa_at is None and await self.auth.mfa.has_factor(session.user.id):
            # a password-only session outlived its user's enrolment (elsewhere): it ends, or
            # it could register a factor of its own or change the password (F12m #2)
            await self.auth.end_session(token)
            await _refuse_unauthenticated(scope, send)
            return
        if session.user.must_change_password and path not in CHANGE_PATHS:
            await _refuse_until_changed(scope, send)
            return
        if session.mfa_at is None and path not in ENROL_PATHS:
            await _refuse_until_enrolled(scope, send)
            return
        if scope["method"] in UNSAFE:
            checked = await self._check_csrf(scope, receive, send, session)
            if checked is None:
                return
            receive = checked
        recent = recent_mfa(session)
        if not recent and REAUTH_ROUTES.match(f"{scope['method']} {path}"):
            await _refuse_until_reauth(scope, send)
            return
        reset = _recent_mfa.set((recent, self.auth.settings.reauth_reboot_hosts))
        try:
            await self.app(scope, receive, send)
        finally:
            _recent_mfa.reset(reset)

    async def _check_csrf(
        self, scope: Scope, receive: Receive, send: Send, session: Session
    ) -> Receive | None:
        sent = header(scope, b"x-csrf-token")
        if same_token(sent, session.csrf_token):
            return receive
        body = b""
        if not scope["path"].startswith("/api/") and header(scope, b"content-type").startswith(
            "application/x-www-form-urlencoded"
        ):
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_FORM:
                    break
            form = parse_qs(body.decode("utf-8", "replace"))
            if same_token(form.get("csrf_token", [""])[0], session.csrf_token):
                replayed = False

                async def replay() -> Message:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return replay
        log.warning("CSRF check failed for %s %s", scope["method"], scope["path"])
        await _send_json(
            scope,
            send,
            403,
            "csrf_failed",
            "missing or wrong CSRF token; reload the page and try again",
        )
        return None


def _same_origin(scope: Scope) -> bool:
    origin = header(scope, b"origin")
    host = header(scope, b"host")
    if not origin:
        return True  # not a browser: a browser always sends Origin on WebSocket upgrades
    return origin.split("://", 1)[-1] == host


async def _refuse_unauthenticated(scope: Scope, send: Send) -> None:
    path = scope["path"]
    if path.startswith("/api/") or path == "/metrics":
        await _send_json(scope, send, 401, "unauthorized", "log in first (session required)")
        return
    query = scope.get("query_string", b"").decode()
    target = path + (f"?{query}" if query else "")
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", f"/login?next={quote(target)}".encode())],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _refuse_until_changed(scope: Scope, send: Send) -> None:
    if scope["path"].startswith("/api/") or scope["path"] == "/metrics":
        await _send_json(scope, send, 403, "password_change_required",
                         "change your password first (POST /api/v1/profile/password)")  # fmt: skip
        return
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", b"/password")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


async def _refuse_until_enrolled(scope: Scope, send: Send) -> None:
    if scope["path"].startswith("/api/") or scope["path"] == "/metrics":
        await _send_json(scope, send, 403, "mfa_enrolment_required",
                         "set up a second factor first (/mfa/setup)")  # fmt: skip
        return
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", b"/mfa/setup")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


async def _refuse_until_reauth(scope: Scope, send: Send) -> None:
    if scope["path"].startswith("/api/"):
        await _send_json(scope, send, 403, "reauth_required",
                         "confirm with your second factor first (POST /reauth with a code), "
                         "then retry")  # fmt: skip
        return
    back = safe_next(_referer_path(scope))
    target = "/security?" + urlencode({"next": back, "notice": REAUTH_NOTICE})
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", target.encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


REAUTH_NOTICE = "Confirm it is you with a code (needed within 5 minutes for this), then retry"


def _referer_path(scope: Scope) -> str:
    referer = header(scope, b"referer")
    if not referer:
        return "/"
    parts = urlsplit(referer)
    if parts.netloc and parts.netloc != header(scope, b"host"):
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _locked_note(until: dt.datetime | None, before: dt.datetime | None) -> str:
    """'; account locked until …' when this failure started a lock."""
    now = dt.datetime.now(dt.UTC)
    if until is None or until <= now or (before is not None and before > now):
        return ""
    return f"; account locked until {until:%Y-%m-%d %H:%M:%S%z}"


def _rid(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id") or uuid.uuid4().hex)


async def _send_json(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(
        {"error": {"code": code, "message": message, "details": None, "request_id": _rid(scope)}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def safe_next(target: Any) -> str:
    """Only local paths are followed after login (no open redirects)."""
    text = str(target or "/")
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text
