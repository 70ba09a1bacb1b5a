"""A complete web application on a real database and actor system, and logged-in clients."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pyotp
import pytest
import trio
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from patch_manager.adapter import SystemAdapter
from patch_manager.runtime import Storage
from patch_manager.serve import ActorSystem, build_actor_system, reset_password
from settings import ConfigStore
from storage import Database, get_user
from web import Auth, create_app

from ..conftest import Pki

CONF = """
[agents]
allow_addresses = ["127.0.0.0/8"]  # the simulated agents live on loopback
[polling]
health_interval_s = 3600
patch_interval_s = 7200
backoff_s = [1, 1, 1]
jitter_ratio = 0.0
connect_timeout_s = 2.0
[discovery]
min_prefix_len = 22
"""


@dataclass
class WebRig:
    app: Starlette
    system: ActorSystem
    db: Database
    auth: Auth
    password: str
    totp: str = ""  # the admin's TOTP secret (enrolled by the rig)


@pytest.fixture
async def web_rig(nursery: trio.Nursery, db: Database, pki: Pki, tmp_path: Path) -> WebRig:
    (tmp_path / "patch-manager.toml").write_text(CONF)
    store = ConfigStore(tmp_path)
    storage = Storage(db, None, "test")
    system = build_actor_system(store, storage, pki.ca)
    await nursery.start(system.sink.run)
    await nursery.start(system.scheduler.run)
    auth = Auth(db, secure_cookies=False)
    password = await reset_password(db, auth)
    admin = await db.run(get_user, "admin")
    assert admin is not None
    secret = pyotp.random_base32()
    await auth.mfa.enrol_known_totp(admin.id, secret)
    TOTP["admin"] = secret
    app = create_app(SystemAdapter(storage, system, pki.ca), db, auth=auth)
    return WebRig(app, system, db, auth, password, secret)


@pytest.fixture
async def anonymous(web_rig: WebRig) -> AsyncIterator[httpx2.AsyncClient]:
    async with LifespanManager(web_rig.app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


# -- the second factor (every login needs one) -------------------------------------------------

TOTP: dict[str, str] = {}  # user name -> the TOTP secret the helpers enrolled (or the rig did)
_SENT: dict[str, set[int]] = {}  # secret -> time steps whose code a helper has sent


def totp_code(secret: str) -> str:
    """A code of ``secret`` the server has not accepted yet: each step's code is accepted once
    and the server allows one step either way, so the current step's, else the next one's,
    else the previous one's."""
    now = int(time.time() // 30)
    sent = _SENT.setdefault(secret, set())
    for step in (now, now + 1, now - 1):
        if step not in sent:
            sent.add(step)
            return str(pyotp.TOTP(secret).at(step * 30))
    raise AssertionError("more than three TOTP logins of one user within 30 s")


async def second_step(
    client: httpx2.AsyncClient, response: httpx2.Response, username: str
) -> httpx2.Response:
    """After a password POST: when the server asks for the second factor, send the user's
    TOTP code (another one if a step boundary made it stale). Returns the final response."""
    if response.headers.get("location") != "/login/mfa":
        return response
    for _ in range(3):
        response = await client.post("/login/mfa", data={"code": totp_code(TOTP[username])})
        if response.status_code == 303:
            break
    return response


async def enrol_totp(client: httpx2.AsyncClient, username: str) -> str:
    """Enrol an authenticator app for the logged-in user (confined to /mfa/setup until it
    has a factor); returns the secret (also remembered in ``TOTP``)."""
    page = await client.get("/mfa/setup")
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
    assert secret is not None, page.text
    confirmed = await client.post(
        "/mfa/totp", data={"csrf_token": form_token(page.text), "code": totp_code(secret[1])}
    )
    assert confirmed.status_code == 200 and "recovery-codes" in confirmed.text, confirmed.text
    TOTP[username] = secret[1]
    return secret[1]


async def login(client: httpx2.AsyncClient, password: str, username: str = "admin") -> str:
    """Log in through the form, with the second factor (enrolling one first for a user who
    has none); returns the session's CSRF token."""
    page = await client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    response = await client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token[1], "next": "/"},
    )
    assert response.status_code == 303, response.text
    response = await second_step(client, response, username)
    assert response.status_code == 303, response.text
    dashboard = await client.get("/")
    if dashboard.headers.get("location") == "/mfa/setup":
        await enrol_totp(client, username)
        dashboard = await client.get("/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', dashboard.text)
    assert csrf is not None
    return csrf[1]


@pytest.fixture
async def client(web_rig: WebRig, anonymous: httpx2.AsyncClient) -> httpx2.AsyncClient:
    csrf = await login(anonymous, web_rig.password)
    anonymous.headers["x-csrf-token"] = csrf
    return anonymous


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match[1]


def assert_envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]
