"""API tokens (R-7.6) and the bearer credentials of the JSON API (R-7.3).

A token is ``pm_`` + 256 random bits, shown once and stored as its SHA-256. Presented as
``Authorization: Bearer pm_…`` (or an access JWT exchanged for one at ``POST /api/v1/auth/token``)
it opens the JSON API and /metrics, without cookies or CSRF (a browser never sends it on its
own). Its principal is computed on every request from the owner's CURRENT role, state and
groups, intersected with the token's scope (``authz.TokenScope``) and group restriction: a
demoted owner's tokens shrink at once, a disabled or deleted owner's stop.

Refusals are one line each: 401 ``invalid_token`` (unknown, expired, revoked, owner disabled,
a JWT that does not verify), 403 ``insufficient_scope`` (the scope does not reach this request).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ca import Sealer
from storage import Database, NotFound, PrincipalRow
from storage.tokens import (
    Refresh,
    Rotated,
    TokenItem,
    TokenUse,
    create_token,
    list_tokens,
    revoke_token,
    rotate_refresh,
    start_family,
    token_use,
    token_use_by_id,
    touch_token,
)

from . import audit
from .audit import AuditEntry
from .authz import (
    Action,
    Forbidden,
    Principal,
    Role,
    TokenScope,
    may,
    require,
    token_may_request,
)
from .handle import InvalidInput, Missing
from .jwt_keys import ACCESS_LIFETIME, Clock, InvalidJwt, KeyRing, utc_now
from .middleware import deny_websocket

log = logging.getLogger(__name__)

PREFIX = "pm_"  # API tokens
REFRESH_PREFIX = "pmr_"  # refresh tokens of the JWT exchange
REFRESH_LIFETIME = dt.timedelta(hours=1)  # sliding: each use gives a new one an hour out
DEFAULT_MAX_DAYS = 90
DEFAULT_DAYS = 90  # a token's life when its creator names none (at most max_days)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer_of(scope: Scope) -> str | None:
    """The credential of an ``Authorization: Bearer`` header ("" for one without a token), or
    None when the request has none (another scheme, e.g. Basic added by a reverse proxy, is not
    ours: the request goes on with its session cookie, if any)."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            text: str = value.decode("latin-1").strip()
            kind, _, credential = text.partition(" ")
            if kind.lower() == "bearer":
                return credential.strip()
    return None


MAX_NAME = 100


def name_problem(name: str) -> dict[str, str]:
    """Why ``name`` cannot name a token (the one rule of the API, the page and the CLI)."""
    if not name.strip():
        return {"name": "name the token (what uses it)"}
    if len(name.strip()) > MAX_NAME:
        return {"name": f"at most {MAX_NAME} characters"}
    if not name.isprintable():
        return {"name": "no control characters (tabs, escapes, line breaks)"}
    return {}


class RefusalWindow:
    """Audit entries for unknown bearer credentials: at most one per source address per
    ``window`` (each append takes the audit chain's lock: an anonymous flood must not queue
    every audited action behind it). ``admit`` answers None (do not record) or how many were
    left out since the last recorded one. At most ``size`` addresses are remembered."""

    def __init__(self, window: dt.timedelta = dt.timedelta(minutes=1), size: int = 10_000) -> None:
        self.window = window
        self.size = size
        self._seen: dict[str, tuple[dt.datetime, int]] = {}

    def admit(self, source: str, now: dt.datetime) -> int | None:
        last = self._seen.get(source)
        if last is not None and now - last[0] < self.window:
            self._seen[source] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._seen) >= self.size:  # forget the oldest address
            del self._seen[next(iter(self._seen))]
        self._seen.pop(source, None)
        self._seen[source] = (now, 0)
        return last[1] if last is not None else 0


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    message: str
    token: TokenItem | None = None  # the presented token, when it is one of ours


class Tokens:
    """Token creation, listing, revocation, bearer admission and the JWT exchange."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        *,
        operators_see_ungrouped: bool = False,
        max_days: int = DEFAULT_MAX_DAYS,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.keys = KeyRing(db, sealer, clock)
        self.operators_see_ungrouped = operators_see_ungrouped
        self.max_days = max_days
        self.clock = clock
        self._refusals = RefusalWindow()

    # -- the principal of a token ---------------------------------------------------------

    def principal_of(self, use: TokenUse) -> Principal:
        item = use.token
        row = PrincipalRow(item.user_id, item.username, use.owner_role, use.owner_state,
                           use.owner_group_ids)  # fmt: skip
        who = Principal.of(row, operators_see_ungrouped=self.operators_see_ungrouped)
        groups = frozenset(item.group_ids) if item.restricted else None
        return dataclasses.replace(who, token_scope=TokenScope(item.scope), token_groups=groups,
                                   token_id=item.id, token_name=item.name)  # fmt: skip

    def _problem(self, use: TokenUse | None) -> str:
        if use is None:
            return "unknown token"
        if use.token.revoked_at is not None:
            return "the token has been revoked"
        if use.token.expires_at <= self.clock():
            return "the token has expired"
        if use.owner_state != "active" or Role.of(use.owner_role) is Role.NONE:
            return "the token's owner is disabled"
        if use.sso_off:
            return "the token's owner signs in only through single sign-on, which is turned off"
        if use.family_revoked:
            return "the refresh family of this access token has been revoked"
        return ""

    async def resolve(self, credential: str, method: str, path: str) -> Principal | Refused:
        """The principal of a bearer credential (an API token or an access JWT) for this
        request, or why it is refused."""
        if credential.startswith(PREFIX):
            use = await self.db.run(token_use, hash_secret(credential))
        else:
            try:
                claims = await self.keys.verify(credential)
                token_id = int(claims.get("tid", 0))
            except (InvalidJwt, ValueError, TypeError) as exc:
                return Refused(401, "invalid_token", str(exc) or "invalid token")
            use = await self.db.run(token_use_by_id, token_id, str(claims.get("fam", "")))
        problem = self._problem(use)
        if problem:
            if use is not None:
                log.warning("bearer token %d of %r refused: %s", use.token.id,
                            use.token.username, problem)  # fmt: skip
            return Refused(401, "invalid_token", problem, use.token if use else None)
        assert use is not None
        # (An owner who must still change a one-time password keeps their tokens: a token is
        # made by the owner after the change, or from the CLI by whoever runs the server, which
        # is what first-time setup scripts do.)
        scope = TokenScope(use.token.scope)
        if not token_may_request(scope, method, path):
            log.warning("bearer token %d of %r refused: %s scope for %s %s", use.token.id,
                        use.token.username, scope.value, method, path)  # fmt: skip
            return Refused(403, "insufficient_scope",
                           f"a {scope.value} token may not {method} {path}", use.token)  # fmt: skip
        await self.db.run(touch_token, use.token.id, self.clock())
        return self.principal_of(use)

    async def admit(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp, credential: str
    ) -> None:
        """``web.auth``'s bearer hook: a request with a bearer credential goes on with the
        token's principal (no session, no CSRF) or gets its one-line refusal."""
        state = scope.setdefault("state", {})
        state["session"], state["session_token"] = None, ""
        if scope["type"] != "http":  # the live relay is for browsers with a session
            await deny_websocket(scope, send, 403, "insufficient_scope",
                                 "bearer tokens are for the HTTP API")  # fmt: skip
            return
        answer = (
            await self.resolve(credential, scope["method"], scope["path"])
            if credential
            else Refused(401, "invalid_token", "Authorization: Bearer needs a token")
        )
        if isinstance(answer, Refused):
            await self._record_refusal(scope, credential, answer)
            await _refuse(scope, send, answer)
            return
        state["token_principal"] = answer
        await app(scope, receive, send)

    async def _record_refusal(self, scope: Scope, credential: str, refused: Refused) -> None:
        """A refused bearer credential, audited (``token.use``, outcome denied). Never the
        credential itself: the token's id when known."""
        client = scope.get("client")
        what = AuditEntry(
            actor="anonymous", action="token.use", target=f"{scope['method']} {scope['path']}",
            outcome="denied", source=str(client[0]) if client else "",
            request_id=str(scope.get("state", {}).get("request_id", "")),
            detail=f"{refused.code}: {refused.message}",
        )  # fmt: skip
        if refused.token is not None:
            what = what.but(actor=f"token:{refused.token.id}:{refused.token.name}")
        else:  # an unknown credential: anyone can send those, so one entry a minute per address
            left_out = self._refusals.admit(what.source, self.clock())
            if left_out is None:
                return
            if left_out:
                more = f" (and {left_out} more from this address, not recorded one by one)"
                what = what.but(detail=what.detail + more)
        try:
            await audit.record(self.db, what)
        except Exception as exc:  # the refusal stands; the log says the entry is missing
            log.error("audit entry for a refused token not written: %s", exc)

    # -- managing tokens (people with a session, never a token) -----------------------------

    def _check_request(
        self, who: Principal, owner_role: Role, owner_groups: frozenset[int], scope: str,
        days: int, group_ids: Sequence[int] | None,
    ) -> dict[str, str]:  # fmt: skip
        problems: dict[str, str] = {}
        try:
            token_scope = TokenScope(scope)
        except ValueError:
            problems["scope"] = "choose read, operate or metrics"
        else:
            owner = Principal("", role=owner_role)
            granted = [a for a in Action if _grants(owner, token_scope, a)]
            if not granted:
                problems["scope"] = f"the {owner_role.value} role has no {scope} rights"
        if not 1 <= days <= self.max_days:
            problems["expires_days"] = f"between 1 and {self.max_days} days"
        if group_ids is not None and owner_role is not Role.ADMIN:
            outside = sorted(set(group_ids) - owner_groups)
            if outside:
                problems["group_ids"] = "only groups the owner belongs to: not " + ", ".join(
                    map(str, outside)
                )
        return problems

    async def create(
        self,
        who: Principal,
        *,
        owner: PrincipalRow,
        name: str,
        scope: str,
        days: int | None,
        group_ids: Sequence[int] | None,
        actor: str = "",
        by: str = "",
    ) -> tuple[TokenItem, str]:
        """A new token of ``owner`` (the caller themself; the CLI, acting as the owner, names
        its own audit ``actor``): the stored item and the secret, shown once. Audited."""
        if who.token_scope is not None:
            raise Forbidden(who, Action.VIEW)  # a token never mints tokens
        if owner.user_id != who.user_id:
            require(who, Action.MANAGE_USERS)
        if days is None:  # not named: 90 days, or the maximum when that is lower
            days = min(DEFAULT_DAYS, self.max_days)
        role = Role.of(owner.role) if owner.state == "active" else Role.NONE
        problems = self._check_request(who, role, owner.group_ids, scope, days, group_ids)
        problems.update(name_problem(name))
        if problems:
            raise InvalidInput.of(problems)
        secret = new_secret(PREFIX)

        def described(item: TokenItem) -> AuditEntry:
            what = audit.entry(actor or who, "token.create", f"token:{item.id}",
                               after=_audit_view(item))  # fmt: skip
            return what

        try:
            item = await audit.audited(
                self.db,
                described,
                lambda c: create_token(
                    c, user_id=owner.user_id, name=name.strip(), scope=scope,
                    token_hash=hash_secret(secret), hint=secret[: len(PREFIX) + 6],
                    expires_at=self.clock() + dt.timedelta(days=days), group_ids=group_ids,
                    by=by or who.username,
                ),
            )  # fmt: skip
        except NotFound as exc:
            raise InvalidInput("group_ids", str(exc)) from None
        log.info("API token %d (%s) created for %r by %r", item.id, scope, owner.username,
                 who.username)  # fmt: skip
        return item, secret

    async def list(self, who: Principal, *, everyone: bool = False) -> list[TokenItem]:
        if everyone:
            require(who, Action.MANAGE_USERS)
            return await self.db.run(list_tokens, None)
        return await self.db.run(list_tokens, who.user_id)

    async def revoke(
        self, who: Principal, token_id: int, *, actor: str = "", everyone: bool = False
    ) -> TokenItem:
        """Revoke one's own token (admins, and the CLI with ``everyone``: anyone's); effective
        on the token's next request. Audited."""
        if who.token_scope is not None:
            raise Forbidden(who, Action.VIEW)
        owner = None if everyone or _may_manage_users(who) else who.user_id
        try:
            item = await audit.audited(
                self.db,
                lambda item: audit.entry(actor or who, "token.revoke", f"token:{item.id}",
                                         after=_audit_view(item)),
                lambda c: revoke_token(c, token_id, owner_id=owner, by=actor or who.username),
            )  # fmt: skip
        except NotFound:
            raise Missing(f"no token with id {token_id}") from None
        log.info("API token %d of %r revoked by %r", item.id, item.username, who.username)
        return item

    # -- the JWT exchange -----------------------------------------------------------------

    async def exchange(self, api_token: str) -> dict[str, Any] | Refused:
        """An API token → a 15-minute access JWT and a new refresh family."""
        use = await self.db.run(token_use, hash_secret(api_token)) if api_token else None
        problem = self._problem(use)
        if problem:
            return Refused(401, "invalid_token", problem)
        assert use is not None
        refresh = new_secret(REFRESH_PREFIX)
        family = await audit.audited(
            self.db,
            lambda family: audit.entry(self.principal_of(use), "token.exchange",
                                       f"token:{use.token.id}", after={"family": family}),
            start_family, use.token.id, hash_secret(refresh), self.clock() + REFRESH_LIFETIME,
        )  # fmt: skip
        await self.db.run(touch_token, use.token.id, self.clock())
        return await self._grant(use, family, refresh)

    async def refresh(self, refresh_token: str) -> dict[str, Any] | Refused:
        """A refresh token → a new access JWT and the next refresh token (this one is used
        up). A refresh token presented a second time revokes its whole family."""
        successor = new_secret(REFRESH_PREFIX)
        now = self.clock()
        rotated = await audit.audited(
            self.db, _rotation_entry, rotate_refresh, hash_secret(refresh_token),
            hash_secret(successor), now, now + REFRESH_LIFETIME,
        )  # fmt: skip
        if rotated.outcome is Refresh.REUSED:
            log.warning("a used refresh token of API token %d was presented again: its family "
                        "%s is revoked", rotated.api_token_id, rotated.family_id)  # fmt: skip
            return Refused(
                401,
                "invalid_grant",
                "refresh token already used: every token of its family is revoked",
            )
        if rotated.outcome is not Refresh.OK:
            return Refused(401, "invalid_grant", f"refresh token {rotated.outcome.value}")
        use = await self.db.run(token_use_by_id, rotated.api_token_id, rotated.family_id)
        problem = self._problem(use)
        if problem:
            return Refused(401, "invalid_grant", problem)
        assert use is not None
        return await self._grant(use, rotated.family_id, successor)

    async def _grant(self, use: TokenUse, family: str, refresh: str) -> dict[str, Any]:
        access, _ = await self.keys.sign(
            {"sub": str(use.token.user_id), "tid": use.token.id, "fam": family,
             "scope": use.token.scope}
        )  # fmt: skip
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(ACCESS_LIFETIME.total_seconds()),
            "refresh_token": refresh,
            "refresh_expires_in": int(REFRESH_LIFETIME.total_seconds()),
            "scope": use.token.scope,
        }


def _rotation_entry(rotated: Rotated) -> AuditEntry | None:
    """A refresh rotation (``token.refresh``) or a reused refresh token, which revoked its
    family (``token.refresh.reuse``, denied) — written with the change; an unknown or expired
    refresh token changed nothing and is not recorded (anonymous floods stay out of the log)."""
    target = f"token:{rotated.api_token_id}"
    if rotated.outcome is Refresh.OK:
        return audit.entry(
            "anonymous", "token.refresh", target, after={"family": rotated.family_id}
        )
    if rotated.outcome is Refresh.REUSED:
        return audit.entry("anonymous", "token.refresh.reuse", target, outcome="denied",
                           detail=f"refresh token presented again: family {rotated.family_id} "
                                  "revoked")  # fmt: skip
    return None


def _audit_view(item: TokenItem) -> dict[str, Any]:
    """What the audit log keeps of a token (never its secret or hash)."""
    return {"owner": item.username, "name": item.name, "scope": item.scope,
            "groups": list(item.group_ids) if item.restricted else None,
            "expires_at": item.expires_at.isoformat(),
            "revoked": item.revoked_at is not None}  # fmt: skip


def _grants(owner: Principal, scope: TokenScope, action: Action) -> bool:
    return may(dataclasses.replace(owner, token_scope=scope), action)


def _may_manage_users(who: Principal) -> bool:
    return may(who, Action.MANAGE_USERS)


async def _refuse(scope: Scope, send: Send, refused: Refused) -> None:
    request_id = str(scope.get("state", {}).get("request_id") or secrets.token_hex(16))
    body = json.dumps({"error": {"code": refused.code, "message": refused.message,
                                 "details": None, "request_id": request_id}}).encode()  # fmt: skip
    challenge = f'Bearer error="{refused.code}"'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
