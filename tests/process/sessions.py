"""Logged-in HTTPS clients for a `patch-manager serve` subprocess."""

from __future__ import annotations

import re
from typing import Any

import httpx2


async def logged_in(server: Any) -> httpx2.AsyncClient:
    """A client with the bootstrap admin's session (close it with ``aclose``)."""
    password = await server.wait_admin_password()
    client = httpx2.AsyncClient(base_url=server.url, verify=server.ssl_context(), timeout=10)
    page = await client.get("login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    response = await client.post(
        "login",
        data={"username": "admin", "password": password, "login_token": token[1], "next": "/"},
    )
    assert response.status_code == 303, response.text
    return client
