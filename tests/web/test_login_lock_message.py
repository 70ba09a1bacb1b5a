"""The login page's lock message: the user's zone is unknown before login, so it says how many
minutes remain and labels the clock time as UTC (review rvA, point 5)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx2
import psycopg

from .conftest import WebRig


async def test_a_locked_account_is_told_the_minutes_left_and_the_utc_labelled_end(
    web_rig: WebRig, anonymous: httpx2.AsyncClient
) -> None:
    def lock(conn: psycopg.Connection[Any]) -> dt.datetime:
        row = conn.execute(
            "UPDATE users SET locked_until = now() + interval '30 minutes'"
            " WHERE username = 'admin' RETURNING locked_until"
        ).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    end = (await web_rig.db.run(lock)).astimezone(dt.UTC)
    page = await anonymous.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    response = await anonymous.post(
        "/login",
        data={"username": "admin", "password": web_rig.password, "login_token": token[1]},
    )
    assert response.status_code == 403, response.text
    # Near midnight UTC the end falls on the next day and its date is given too.
    today = dt.datetime.now(dt.UTC).date()
    clock = f"{end:%H:%M}" if end.date() == today else f"{end:%Y-%m-%d %H:%M}"
    assert re.search(rf"for (29|30) more minutes \(until {clock} UTC\)", response.text), (
        response.text
    )
