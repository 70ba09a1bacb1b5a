"""Discovery's "select all" while a scan is still running (issue 16 point 8, review N7): rows
that appear live after "select all" was ticked are ticked too, unless the agent is registered
already (every scan update says which are: they are marked, linked and never ticked).

The relay's scan updates are played by the test through Playwright's WebSocket routing (a scan
that stays running exactly as long as the test needs); the page, its script and the scan it
shows are the real demo's."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, WebSocketRoute, expect

from .login import log_in
from .test_ui import BASE, Demo, demo, page  # noqa: F401  (the demo process and the browser page)


def update(scan_id: int, found: list[str], registered: dict[str, Any], done: bool) -> str:
    return json.dumps({
        "type": "scan", "scan_id": scan_id,
        "progress": {"cidr": f"{BASE}.64/30", "total": 10, "probed": len(found) * 2,
                     "found": len(found), "done": done, "cancelled": False, "failed": False,
                     "error": ""},
        "found": [{"address": a, "hostname": f"host-{a.rsplit('.', 1)[1]}", "os": "Ubuntu",
                   "agent_version": "1.0"} for a in found],
        "registered": registered,
    })  # fmt: skip


def test_select_all_during_a_running_scan_ticks_new_unregistered_finds_only(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    page.goto(demo.url + "discovery")
    if "/login" in page.url:  # run alone
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        page.goto(demo.url + "discovery")
    page.fill("#cidr", f"{BASE}.64/30")  # nothing answers there: a real, empty scan
    page.click("text=Start scan")
    page.wait_for_url(re.compile(r"/discovery/\d+"))
    scan_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

    sockets: list[WebSocketRoute] = []
    a, b, c = f"{BASE}.70", f"{BASE}.71", f"{BASE}.72"

    def relay(ws: WebSocketRoute) -> None:
        sockets.append(ws)

        def on_message(text: str | bytes) -> None:
            if isinstance(text, str) and '"watch_scan"' in text:
                ws.send(update(scan_id, [a], {}, done=False))

        ws.on_message(on_message)

    page.route_web_socket(re.compile(r"/api/v1/live$"), relay)
    try:
        page.reload()
        rows = page.locator("#scan-results tr")
        expect(rows).to_have_count(1)
        expect(page.locator('[data-scan="state"]')).to_have_text("(running)")
        page.check("#select-all-found")
        expect(page.locator(f'input[value="{a}"]')).to_be_checked()

        registered = {b: {"address": b, "host_id": 1, "name": "web-b"}}
        sockets[-1].send(update(scan_id, [a, b, c], registered, done=False))
        expect(rows).to_have_count(3)
        expect(page.locator(f'input[value="{c}"]')).to_be_checked()  # appeared after: ticked
        expect(page.locator(f'input[value="{b}"]')).not_to_be_checked()  # registered: never
        marked = page.locator(f'[data-registered="{b}"] a')
        expect(marked).to_have_text("web-b")
        expect(marked).to_have_attribute("href", "/hosts/1")
        expect(page.locator(f'[data-registered="{c}"]')).to_have_text("no")
        expect(page.locator(f'[data-registered="{a}"]')).to_have_text("no")
    finally:
        page.unroute_all()
