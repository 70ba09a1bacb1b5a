"""Logged-in HTTPS clients for a `patch-manager serve` subprocess."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import trio

from ..web.conftest import totp_code

# What the bootstrap admin's one-time password is replaced with at the first login.
ADMIN_PASSWORD = "orchid lantern ferry ninety-one"
# The admin's authenticator app secret per data directory (it outlives a server restart).
ADMIN_TOTP: dict[str, str] = {}


async def second_factor(client: httpx2.AsyncClient, response: httpx2.Response, secret: str) -> Any:
    """After a password POST: send a TOTP code of ``secret`` when the server asks for one."""
    if response.headers.get("location") != "/login/mfa":
        return response
    for _ in range(3):  # a code made stale by a step boundary: the next one
        response = await client.post("login/mfa", data={"code": totp_code(secret)})
        if response.status_code == 303:
            break
    return response


async def enrol_totp(client: httpx2.AsyncClient) -> str:
    """Enrol an authenticator app for the logged-in user; returns its secret."""
    page = await client.get("mfa/setup")
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert secret is not None and csrf is not None, page.text
    confirmed = await client.post(
        "mfa/totp", data={"csrf_token": csrf[1], "code": totp_code(secret[1])}
    )
    assert confirmed.status_code == 200 and "recovery-codes" in confirmed.text, confirmed.text
    return secret[1]


async def log_in_and_change(client: httpx2.AsyncClient, server: Any) -> None:
    """Log in as the bootstrap admin; the first login must choose a new password (the printed
    one is single-use in effect) and enrol an authenticator app (its secret is kept in
    ``ADMIN_TOTP`` and on ``server.totp_secret``); later ones (after a restart) use both."""
    printed = await server.wait_admin_password()
    for password in (printed, ADMIN_PASSWORD):
        page = await client.get("login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None, page.text
        response = await client.post(
            "login",
            data={"username": "admin", "password": password, "login_token": token[1], "next": "/"},
        )
        if response.status_code == 303:
            break
    assert response.status_code == 303, response.text
    secret = ADMIN_TOTP.get(str(server.data_dir), "")
    if response.headers.get("location") == "/login/mfa" and not secret:
        with trio.fail_after(10):
            secret = await server.wait_totp_secret()  # a demo: its banner has the secret
    response = await second_factor(client, response, secret)
    assert response.status_code == 303, response.text
    if response.headers["location"] == "/password":
        page = await client.get("password")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None, page.text
        changed = await client.post(
            "password",
            data={
                "csrf_token": csrf[1],
                "current_password": password,
                "new_password": ADMIN_PASSWORD,
            },
        )
        assert changed.status_code == 303, changed.text
    if (await client.get("")).headers.get("location") == "/mfa/setup":
        secret = ADMIN_TOTP[str(server.data_dir)] = await enrol_totp(client)
    server.totp_secret = secret


async def logged_in(server: Any) -> httpx2.AsyncClient:
    """A client with the bootstrap admin's session (close it with ``aclose``)."""
    client = httpx2.AsyncClient(base_url=server.url, verify=server.ssl_context(), timeout=10)
    await log_in_and_change(client, server)
    return client
