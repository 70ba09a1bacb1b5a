"""WebAuthn in a real headless Chromium with the DevTools virtual authenticator (CDP
``WebAuthn.*``): register a security key, log in with it, a cloned authenticator (its
signature counter going back) refused, the key removed on the Security page.

Chromium offers WebAuthn only in a secure context, and not on a page with a certificate error:
the app is served over plain HTTP on loopback and browsed as http://localhost (a secure
context), so the relying party is ``localhost``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from web import WebListener, serve_web

from ..web.conftest import WebRig, totp_code, web_rig  # noqa: F401  (the in-process application)
from .login import log_in

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")


def ceremonies(base: str, password: str, secret: str) -> dict[str, Any]:
    """Register, log in with the key, then clone it with a lower counter (worker thread)."""
    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        context = browser.new_context()
        context.set_default_timeout(20_000)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        options = {"protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
                   "hasUserVerification": True, "isUserVerified": True}  # fmt: skip
        authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        authenticator_id = authenticator["authenticatorId"]
        log_in(page, base, "admin", password, secret)
        page.goto(base + "/mfa/setup")
        page.fill("#webauthn-name", "desk key")
        page.click("#webauthn-register")
        expect(page.locator("#webauthn-codes")).to_be_visible()  # the first recovery codes
        seen["codes"] = page.locator("#webauthn-code-list").text_content()
        page.goto(base + "/security")
        seen["security"] = page.content()
        # Log out; log in again with the key instead of a code.
        page.click("form[action='/logout'] button")
        page.goto(base + "/login")
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login/mfa" in url)
        page.click("#webauthn-login")
        page.wait_for_url(lambda url: "/login" not in url)
        seen["after_key_login"] = page.url
        (credential,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})[
            "credentials"
        ]
        seen["count"] = credential["signCount"]
        # A clone: the same key material with a counter behind the server's.
        cdp.send(
            "WebAuthn.removeCredential",
            {"authenticatorId": authenticator_id, "credentialId": credential["credentialId"]},
        )
        cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": authenticator_id, "credential": credential | {"signCount": 0}},
        )
        page.click("form[action='/logout'] button")
        page.goto(base + "/login")
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login/mfa" in url)
        page.click("#webauthn-login")
        error = page.locator("#webauthn-error")
        expect(error).to_be_visible()
        seen["clone_error"] = error.text_content()
        seen["clone_url"] = page.url
        # The app's code still works on the same page; then the key is removed on Security.
        page.fill("#code", totp_code(secret))
        page.click("form[action='/login/mfa'] button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        page.goto(base + "/security")
        page.locator("tr", has_text="desk key").get_by_role("button", name="Remove").click()
        expect(page.locator(".notice")).to_contain_text("Security key desk key removed")
        browser.close()
    return seen


async def test_a_security_key_registers_logs_in_and_a_clone_with_a_lower_count_is_refused(
    nursery: trio.Nursery,
    web_rig: WebRig,  # noqa: F811
) -> None:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", None, None)  # plain HTTP: http://localhost is secure
    urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    port = urls[0].rsplit(":", 1)[1].rstrip("/")
    base = f"http://localhost:{port}"
    with trio.fail_after(150):
        seen = await trio.to_thread.run_sync(ceremonies, base, web_rig.password, web_rig.totp)
    stop.set()
    assert len((seen["codes"] or "").split()) == 10
    assert "desk key" in seen["security"]
    assert seen["after_key_login"].rstrip("/") == base
    assert seen["count"] >= 2  # registration, then the login moved the counter on
    assert "cloned" in (seen["clone_error"] or "")
    assert "/login/mfa" in seen["clone_url"]  # no session
    assert seen["count"] > 0  # the clone (count 0) was behind the stored counter
    rows = await web_rig.db.run(
        lambda c: c.execute("SELECT name, sign_count FROM webauthn_credentials").fetchall()
    )
    assert rows == []  # removed on the Security page
