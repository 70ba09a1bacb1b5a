"""Freshness in a real Chromium (issue 16 point 1): a host whose agent goes down turns
``failing`` with its retry line live, and back to ``healthy`` by itself (no reload, no Refresh);
the live badge never says "offline" on a page load; times follow the profile's time zone."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from simulator import control

from .login import log_in
from .test_ui import Demo, demo, page  # noqa: F401  (the demo process and the browser page)


def test_a_host_going_down_turns_failing_live_and_comes_back_without_a_refresh(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    page.goto(demo.url)
    if "/login" in page.url:
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")
    page.goto(demo.url + "profile")
    page.select_option("#time-zone", "Asia/Kolkata")
    page.click("text=Save time zone")
    expect(page.locator(".notice")).to_have_text("Time zone saved")

    page.goto(demo.url + "hosts/1")
    badge = page.locator('[data-host-condition="1"]')
    expect(badge).to_have_text("healthy", timeout=60_000)
    expect(page.locator("#live-status")).to_have_text("live")
    address = re.search(r"(127\.\d+\.\d+\.\d+):", page.locator("main p.muted").first.inner_text())
    assert address is not None
    when = page.locator('[data-field="next_health_poll"]')  # a time in the user's zone
    expect(when).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    utc_minute = int(when.get_attribute("title")[14:16])  # type: ignore[index]
    assert int(when.inner_text()[-2:]) == (utc_minute + 30) % 60  # India: UTC+05:30

    sock = demo.data_dir / "simulator.sock"
    down = control.request(sock, {"action": "faults", "target": address[1], "set": {"down": True}})
    assert down["ok"], down
    page.click("text=Refresh now")  # (the poll that finds it down; everything after is live)
    expect(page.locator(".notice")).to_have_text("Refresh requested")
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    expect(badge).to_have_text("failing", timeout=30_000)
    why = page.locator('[data-host-why="1"]')
    expect(why).to_contain_text(re.compile(r"poll failing since \d\d:\d\d \(\d of 3 retries"))
    # the live line's times are <time> elements (UTC on hover), as the server renders them
    expect(why.locator("time").first).to_have_attribute("title", re.compile(r"UTC$"))
    up = control.request(sock, {"action": "faults", "target": address[1], "set": {"down": False}})
    assert up["ok"], up
    expect(badge).to_have_text("healthy", timeout=30_000)  # the ladder's retry, 1 s here
    expect(why).not_to_contain_text("poll failing")
    assert loads == []  # no reload, no Refresh: the live update turned it back
    assert "offline" not in page.locator("#live-status").inner_text()


def test_the_dashboard_activity_feed_names_hosts_by_display_name_with_a_time(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    page.goto(demo.url)
    if "/login" in page.url:  # run alone
        log_in(page, demo.url, "admin", demo.password, demo.totp)
    expect(page.locator("h1")).to_have_text("Fleet")
    expect(page.locator("#live-status")).to_have_text("live")
    sock = demo.data_dir / "simulator.sock"
    agent = next(a for a in control.request(sock, {"action": "status"})["agents"]
                 if a["address"].endswith(".2"))  # fmt: skip
    control.request(sock, {"action": "faults", "target": agent["address"], "set": {"down": True}})
    try:
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        refreshed = page.request.post(
            demo.url + "api/v1/hosts/2/refresh", headers={"x-csrf-token": csrf or ""}
        )
        assert refreshed.status == 202, refreshed.text()
        entry = page.locator("#activity li", has_text="failing").first
        expect(entry).to_contain_text(agent["hostname"], timeout=30_000)  # not the address
        expect(entry).to_contain_text(agent["address"])  # beside it
        expect(entry.locator("time").first).to_have_attribute("title", re.compile(r" UTC$"))
        # its reason ("poll failing since …") has its own time, UTC on hover
        expect(entry.locator("time").nth(1)).to_have_attribute("title", re.compile(r" UTC$"))
    finally:
        control.request(
            sock, {"action": "faults", "target": agent["address"], "set": {"down": False}}
        )
