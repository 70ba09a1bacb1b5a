"""Interim authentication: local accounts (Argon2id), server-side sessions, CSRF protection.

Every request except the health check, static assets and the login page needs a session
(cookie ``pm_session``: HttpOnly, Secure on HTTPS, SameSite=Strict). The session token is stored
only as a SHA-256 hash. State-changing requests must carry the session's CSRF token: the
``X-CSRF-Token`` header (API, JavaScript) or a ``csrf_token`` form field (HTML forms). WebSocket
upgrades must come from our own origin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

import argon2
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import (
    Database,
    Session,
    User,
    create_session,
    delete_session,
    get_user,
    load_session,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "pm_session"
LOGIN_COOKIE = "pm_login"
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/api/v1/health", "/login", "/favicon.ico"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM = 1024 * 1024

_hasher = argon2.PasswordHasher()  # Argon2id, library defaults (64 MiB, t=3, p=4)
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def generate_password() -> str:
    return secrets.token_urlsafe(15)


class Auth:
    """Password checks and sessions. Argon2 runs in worker threads, two at a time at most."""

    def __init__(
        self,
        db: Database,
        *,
        secure_cookies: bool = True,
        session_lifetime: dt.timedelta = dt.timedelta(hours=12),
        idle_timeout: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.db = db
        self.secure_cookies = secure_cookies
        self.session_lifetime = session_lifetime
        self.idle_timeout = idle_timeout
        self._limiter = trio.CapacityLimiter(2)

    async def hash_password(self, password: str) -> str:
        return await trio.to_thread.run_sync(_hasher.hash, password, limiter=self._limiter)

    async def check_password(self, username: str, password: str) -> User | None:
        user = await self.db.run(get_user, username.strip().lower())
        stored = user.password_hash if user else _DUMMY_HASH  # same work either way

        def verify() -> bool:
            try:
                return _hasher.verify(stored, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        ok = await trio.to_thread.run_sync(verify, limiter=self._limiter)
        return user if ok and user is not None else None

    async def start_session(self, user: User) -> tuple[str, str]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = dt.datetime.now(dt.UTC) + self.session_lifetime
        await self.db.run(create_session, hash_token(token), user.id, csrf, expires)
        return token, csrf

    async def session(self, token: str) -> Session | None:
        if not token:
            return None
        return await self.db.run(load_session, hash_token(token), self.idle_timeout)

    async def end_session(self, token: str) -> None:
        await self.db.run(delete_session, hash_token(token))

    def session_cookie(self, token: str, *, max_age: int | None = None) -> str:
        parts = [f"{SESSION_COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
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

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

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
        token = cookies_of(scope).get(SESSION_COOKIE, "")
        session = await self.auth.session(token) if token else None
        state["session"] = session
        state["session_token"] = token if session else ""
        if scope["type"] == "websocket":
            if session is None or not _same_origin(scope):
                await send({"type": "websocket.close", "code": 4401, "reason": "login required"})
                return
            await self.app(scope, receive, send)
            return
        if session is None:
            await _refuse_unauthenticated(scope, send)
            return
        if scope["method"] in UNSAFE:
            checked = await self._check_csrf(scope, receive, send, session)
            if checked is None:
                return
            receive = checked
        await self.app(scope, receive, send)

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
