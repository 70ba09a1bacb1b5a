"""Logged-in HTTPS clients for a `patch-manager serve` subprocess."""

from __future__ import annotations

import re
from typing import Any

import httpx2

# What the bootstrap admin's one-time password is replaced with at the first login.
ADMIN_PASSWORD = "orchid lantern ferry ninety-one"


async def log_in_and_change(client: httpx2.AsyncClient, server: Any) -> None:
    """Log in as the bootstrap admin; the first login must choose a new password (the printed
    one is single-use in effect), later ones (after a restart) use the chosen one."""
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
    if response.headers["location"] != "/password":
        return
    page = await client.get("password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    changed = await client.post(
        "password",
        data={"csrf_token": csrf[1], "current_password": password, "new_password": ADMIN_PASSWORD},
    )
    assert changed.status_code == 303, changed.text


async def logged_in(server: Any) -> httpx2.AsyncClient:
    """A client with the bootstrap admin's session (close it with ``aclose``)."""
    client = httpx2.AsyncClient(base_url=server.url, verify=server.ssl_context(), timeout=10)
    await log_in_and_change(client, server)
    return client
