"""Logging in from a real Chromium, second factor included (every login needs one): the one
place the browser tests fill the login form."""

from __future__ import annotations

import re
from collections.abc import Iterable

from playwright.sync_api import Page, expect

from ..web.conftest import totp_code


def read_banner(lines: Iterable[str]) -> tuple[str, str, str]:
    """(URL, admin password, admin TOTP secret) from a `patch-manager demo` banner."""
    url = password = secret = ""
    for line in lines:
        if "is running at " in line:
            url = line.split("is running at ", 1)[1].strip()
        if "with password " in line:
            password = line.split("with password ", 1)[1].strip()
        if "authenticator secret (TOTP) " in line:
            secret = line.split("authenticator secret (TOTP) ", 1)[1].strip()
            break
    assert url and password and secret, "the demo did not start"
    return url, password, secret


def log_in(page: Page, base: str, username: str, password: str, secret: str) -> None:
    """Log in through the form and the second step (a TOTP code of ``secret``)."""
    page.goto(base.rstrip("/") + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/mfa" in url or "/login" not in url)
    for _ in range(3):  # a code made stale by a step boundary: the next one
        if "/login/mfa" not in page.url:
            break
        page.fill("#code", totp_code(secret))
        page.click("button[type=submit]")
        page.wait_for_load_state()
    expect(page).not_to_have_url(re.compile(r"/login"))
