"""A real Chromium receives the relay's paged snapshot whole: the dashboard's live counts cover
every page, not only the first, and keep the server-rendered totals until the last page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyotp
import pytest
import trio
from playwright.sync_api import Page, WebSocketRoute, expect, sync_playwright

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


HOLD_SECRET = pyotp.random_base32()


def counts_while_pages_arrive(base: str) -> list[str]:
    """The dashboard's pending count as rendered by the server, then after each page of the
    relay's snapshot: Playwright routes the page's WebSocket, holds the server's messages and
    hands them to the page one at a time."""
    held: list[str] = []
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        routes.append(ws)
        server = ws.connect_to_server()
        server.on_message(lambda message: held.append(str(message)))  # held, not passed on

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(20_000)
        page: Page = context.new_page()
        log_in(page, base, "held-admin", PASSWORD, HOLD_SECRET)
        page.route_web_socket("**/api/v1/live", route)
        page.goto(base + "/")
        pending = page.locator('[data-count="pending"]')
        seen = [pending.inner_text()]
        for _ in range(10_000):  # Playwright takes in the held messages during its calls
            if len(held) >= 3:
                break
            page.evaluate("1")
        pages = [json.loads(m) for m in held[:3]]
        assert [p["page"] for p in pages] == [1, 2, 3]
        # Changes between the pages (as a scope change sends them): a host of page 3 turned
        # healthy (newer than page 3's copy of it) and a host no page holds.
        last = {**pages[2]["hosts"][-1], "condition": "healthy"}
        late = {**pages[2]["hosts"][-1], "host_id": 999_999, "name": "late"}
        changes = [json.dumps({"type": "change", "host": h}) for h in (last, late)]
        for message in [held[0], *changes, held[1], held[2]]:
            routes[0].send(message)  # returns once the page has dispatched it
            seen.append(pending.inner_text())
        seen.append(page.locator('[data-count="healthy"]').inner_text())
        browser.close()
    return seen


async def test_the_dashboard_keeps_its_count_until_the_last_page_and_changes_between_pages(
    nursery: trio.Nursery,
    web_rig: WebRig,  # noqa: F811
    pki: Any,
) -> None:
    for host_id in range(800_001, 800_001 + HOSTS):
        web_rig.system.fleet.publish(HostSnapshot(host_id, f"paged-{host_id}"))
    hashed = await web_rig.auth.hash_password(PASSWORD)
    user = await web_rig.db.run(create_user, "held-admin", hashed, "admin")
    await web_rig.auth.mfa.enrol_known_totp(user.id, HOLD_SECRET)
    base, stop = await serve(nursery, web_rig, pki)
    with trio.fail_after(150):
        seen = await trio.to_thread.run_sync(counts_while_pages_arrive, base.rstrip("/"))
    # The pending count: server-rendered, after page 1 (500 hosts), the two changes and page 2
    # (1,000 hosts): the server's total; after page 3 the whole snapshot with both changes
    # kept (one host of page 3 healthy, the late one pending); then the healthy count.
    assert seen == [str(HOSTS)] * 6 + ["1"]
    stop.set()
