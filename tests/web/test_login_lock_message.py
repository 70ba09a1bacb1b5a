"""The login page's lock message: the user's zone is unknown before login, so it says how many
minutes remain and labels the clock time as UTC (review rvA, point 5)."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import psycopg

from .conftest import WebRig


async def test_a_locked_account_is_told_the_minutes_left_and_the_utc_labelled_end(
    web_rig: WebRig, anonymous: httpx2.AsyncClient
) -> None:
    def lock(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE users SET locked_until = now() + interval '30 minutes' WHERE username = 'admin'"
        )

    await web_rig.db.run(lock)
    page = await anonymous.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    response = await anonymous.post(
        "/login",
        data={"username": "admin", "password": web_rig.password, "login_token": token[1]},
    )
    assert response.status_code == 403, response.text
    assert re.search(r"for (29|30) more minutes \(until \d{2}:\d{2} UTC\)", response.text), (
        response.text
    )
