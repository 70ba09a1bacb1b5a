"""The Deploy plan and the windows editor in a real Chromium (issue 16 points 2, 3): the plan
shows the ticked patch only and the job stores it; the windows editor shows a problem beside
its field as it is typed, with no console error at any point."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from .login import log_in
from .test_ui import Demo, demo, page, shot  # noqa: F401  (the demo process and the browser page)


def test_plan_preview_of_a_ticked_patch_is_what_the_job_stores(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    errors: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            errors.append(f"{msg.text} ({msg.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo.url)
    if "/login" in page.url:
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")

    page.goto(demo.url + "deploy?host_ids=4")
    expect(page.locator("#plan-hosts [data-plan-host='4']")).to_be_visible()
    first = page.locator("input[name=patch]").first
    name = first.get_attribute("value")
    assert name
    first.check()
    expect(page.locator("#selection")).to_have_value("list")
    expect(page.locator("#plan-summary")).to_contain_text("Outdated")
    page.check("input[name=schedule][value=now]")
    page.click("#show-plan")
    expect(page.locator("#plan-hosts .pkg")).to_have_text([name])
    expect(page.locator("#plan-summary")).not_to_contain_text("Outdated")
    shot(page, "13-deploy-plan")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deploy-button")
    expect(page.locator(".notice")).to_contain_text("created for 1 host(s)")
    expect(page.locator("#job-rows [data-row-plan]").first).to_contain_text(f"{name} ")
    expect(page.locator("#job-rows [data-row-plan]").first).to_contain_text("→")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)

    page.goto(demo.url + "windows")
    page.fill("#w-tz", "Mars/Olympus")
    page.locator("#w-tz").dispatch_event("change")
    expect(page.locator("#err-timezone")).to_contain_text("unknown IANA time zone")
    expect(page.locator("#window-text")).to_have_text("not a usable window yet")
    page.fill("#w-tz", "Europe/Berlin")
    page.locator("#w-tz").dispatch_event("change")
    expect(page.locator("#err-timezone")).to_have_count(0)
    expect(page.locator("#window-text")).to_contain_text("every Tue 02:00")
    shot(page, "14-window-editor-live")
    assert errors == [], errors
