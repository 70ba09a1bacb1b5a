"""The job page in a real Chromium: its status follows the job through the live relay (pushed
roll-up changes, one reload per change), never by reloading itself in a loop."""

from __future__ import annotations

import datetime as dt

from playwright.sync_api import Page, expect

from .login import log_in
from .test_ui import Demo, demo, page  # noqa: F401  (the demo process and the browser page)


def test_job_page_reaches_the_outcome_through_the_relay_without_a_reload_loop(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    page.goto(demo.url)
    if "/login" in page.url:
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")
    page.goto(demo.url + "deploy?host_ids=2")
    page.check("input[name=schedule][value=now]")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deploy-button")
    expect(page.locator(".notice")).to_contain_text("created for 1 host(s)")
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    # One load per status change at most (queued → running → succeeded), never a loop.
    assert len(loads) <= 2, loads


def test_a_job_cancelled_elsewhere_shows_as_cancelled_on_an_open_job_page(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    """No row of this job changes (nothing ran): only the pushed roll-up can tell the page."""
    page.goto(demo.url)
    if "/login" in page.url:  # run alone
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")
    # A one-time window for host 3 opening tomorrow: the deployment waits for it.
    opens = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    page.goto(demo.url + "windows")
    page.fill("#w-name", "tomorrow")
    page.select_option("#w-target", "host:3")
    page.select_option("#w-rec", "once")
    page.fill("#w-date", opens.date().isoformat())
    page.fill("#w-time", opens.strftime("%H:%M:%S"))
    page.fill("#w-dur", "30")
    page.fill("#w-tz", "UTC")
    page.click("text=Save window")
    expect(page.locator(".notice")).to_have_text("Window saved")
    page.goto(demo.url + "deploy?host_ids=3")
    page.check("input[name=schedule][value=window]")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deploy-button")
    expect(page.locator(".notice")).to_contain_text("created for 1 host(s)")
    expect(page.locator("#job-status")).to_have_text("queued")
    other = page.context.new_page()
    try:
        other.goto(page.url.split("?")[0])  # the job page itself, without the notice
        other.once("dialog", lambda dialog: dialog.accept())
        other.click("text=Cancel waiting hosts")
        expect(other.locator("[data-job-row]").first).to_have_text("cancelled")
    finally:
        other.close()
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=15_000)
