"""Single sign-on with the Entra ID preset in a real headless Chromium: the login page's "Sign
in with …" button, the provider (a real OIDC provider on 127.0.0.1, Entra-style: per-tenant
discovery and issuer, group object ids in ``groups``, the user's ``oid`` as the subject:
tests.web.sso_provider), back to our callback and
on to the dashboard, signed in as the mapped user; an admin signed in this way runs Settings →
Single sign-on → Test configuration (every check ok, no console error: nothing the CSP
blocks); an unmapped person gets the refusal page.

The server runs in this process (Hypercorn over TLS on loopback); the provider is another site
(plain http on another port), so the return from it is a cross-site navigation as with a real
provider, and the SameSite=Strict session cookie must still reach the dashboard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from ca import Sealer
from storage import create_group, get_user
from storage.sso import SsoConfig, identities_of, save_mapping, save_sso_config

from ..web.conftest import WebRig, web_rig  # noqa: F401  (the in-process application)
from ..web.sso_provider import CLIENT_ID, CLIENT_SECRET, Provider, start_provider
from ..web.test_relay import serve

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")


def sign_in(base: str, provider: Provider) -> dict[str, str]:
    """Sign in with the button, then as an unmapped person (runs in a worker thread)."""
    seen: dict[str, str] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        errors: list[str] = []  # console errors (CSP violations among them) on erin's pages
        for person in ("dana", "erin", "stranger"):
            context = browser.new_context(ignore_https_errors=True)
            context.set_default_timeout(20_000)
            page: Page = context.new_page()
            page.goto(base + "/login")
            button = page.locator("#sso-button")
            expect(button).to_have_text("Sign in with Test IdP")
            if person == "erin":
                provider.user = {"sub": "s-erin", "oid": "erin-oid", "groups": [ADMINS]}
            if person == "stranger":
                provider.user = {"sub": "s-x", "oid": "someone-else", "groups": ["sales"]}
            button.click()
            if person == "erin":  # an SSO admin tests the configuration; no CSP violation
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.wait_for_url(base + "/")
                page.goto(base + "/settings")
                page.click("#sso-settings-link")
                page.click("#sso-test")
                checks = page.locator("#sso-checks tbody tr")
                expect(checks).to_have_count(6)
                seen["checks"] = " | ".join(checks.all_inner_texts())
                seen["console"] = " | ".join(errors)
            elif person == "dana":
                page.wait_for_url(base + "/")
                seen["user"] = page.locator("header .user").inner_text()
                seen["heading"] = page.locator("h1").first.inner_text()
                response = page.goto(base + "/hosts")
                seen["hosts"] = str(response.status if response else 0)
            else:
                expect(page.locator("#sso-title")).to_have_text("Sign-in refused")
                seen["refusal"] = page.locator("#sso-message").inner_text()
                response = page.goto(base + "/")
                seen["after_refusal"] = page.url
            context.close()
        browser.close()
    return seen


TENANT = "3f1c2b9e-0d4a-4c55-9a51-6f0e8d2c7b10"
OPERATORS = "0b7d6a52-1111-4b1e-8c2f-2a9e3d4c5b61"  # Entra sends group object ids
ADMINS = "9e8f7a6b-2222-4c3d-9e1f-3b2a1c0d9e87"


async def test_entra_style_sign_in_leads_through_the_provider_to_the_dashboard_in_chromium(
    nursery: trio.Nursery,
    web_rig: WebRig,  # noqa: F811
    pki: Any,
) -> None:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    from web import create_app
    from web.sso import OidcClient

    provider = await start_provider(nursery, tenant=TENANT)  # Entra-style, on 127.0.0.1
    sealer = Sealer(os.urandom(32))
    web_rig.app = create_app(
        web_rig.app.state.relay.handle,
        web_rig.db,
        auth=web_rig.auth,
        sealer=sealer,
        sso_client=OidcClient(entra_authority=provider.base),
    )
    provider.user = {
        "sub": "pairwise-subject-of-dana",
        "oid": "dana-object-id",
        "preferred_username": "dana@example.com",
        "groups": [OPERATORS],
    }
    group = await web_rig.db.run(create_group, "web")
    config = SsoConfig(
        enabled=True,
        preset="entra",
        display_name="Test IdP",
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret_sealed=sealer.seal(CLIENT_SECRET),
    )
    await web_rig.db.run(lambda c: save_sso_config(c, config, by="test"))
    await web_rig.db.run(lambda c: save_mapping(c, OPERATORS, "operator", (group.id,), by="test"))
    await web_rig.db.run(lambda c: save_mapping(c, ADMINS, "admin", (), by="test"))
    base, stop = await serve(nursery, web_rig, pki)
    with trio.fail_after(150):
        seen = await trio.to_thread.run_sync(sign_in, base.rstrip("/"), provider)
    stop.set()
    assert seen["user"] == "dana.example.com"
    assert seen["heading"] == "Fleet"  # the dashboard
    assert seen["hosts"] == "200"
    assert "not given a role here" in seen["refusal"]
    assert seen["checks"].count("\tok\t") == 6, seen["checks"]
    assert provider.discovery_url in seen["checks"]
    assert seen["console"] == ""
    assert "/login" in seen["after_refusal"]
    user = await web_rig.db.run(get_user, "dana.example.com")
    assert user is not None
    assert (user.role, user.group_ids) == ("operator", (group.id,))
    [identity] = await web_rig.db.run(identities_of, user.id)
    assert (identity.issuer, identity.subject) == (
        f"{provider.base}/{TENANT}/v2.0",
        "dana-object-id",
    )
