"""A real Chromium receives the relay's paged snapshot whole: the dashboard's live counts cover
every page, not only the first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyotp
import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from actors.state import HostSnapshot
from storage import create_user
from web.relay import PAGE_SIZE

from ..web.conftest import WebRig, web_rig  # noqa: F401  (the in-process application)
from ..web.test_relay import serve
from .login import log_in

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "relay-pages-password-1"
SECRET = pyotp.random_base32()
HOSTS = 2 * PAGE_SIZE + 200  # three pages


def count_on_dashboard(base: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(20_000)
        page = context.new_page()
        log_in(page, base, "pages-admin", PASSWORD, SECRET)
        page.goto(base + "/")
        expect(page.locator("#live-status")).to_have_text("live")
        # never-contacted hosts are counted under "pending" by the page's own tally
        expect(page.locator('[data-count="pending"]')).to_have_text(str(HOSTS))
        browser.close()


async def test_the_dashboard_counts_every_host_of_a_three_page_snapshot(
    nursery: trio.Nursery,
    web_rig: WebRig,  # noqa: F811
    pki: Any,
) -> None:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    for host_id in range(800_001, 800_001 + HOSTS):
        web_rig.system.fleet.publish(HostSnapshot(host_id, f"paged-{host_id}"))
    hashed = await web_rig.auth.hash_password(PASSWORD)
    user = await web_rig.db.run(create_user, "pages-admin", hashed, "admin")
    await web_rig.auth.mfa.enrol_known_totp(user.id, SECRET)
    base, stop = await serve(nursery, web_rig, pki)
    with trio.fail_after(150):
        await trio.to_thread.run_sync(count_on_dashboard, base.rstrip("/"))
    assert web_rig.app.state.relay.snapshot_pages >= 3
    stop.set()
