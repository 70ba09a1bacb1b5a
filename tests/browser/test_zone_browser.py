"""The windows page in a real Chromium (issue 16 points 3, 4, 6): a problem the server reported
for a field goes away once the field is fixed, and the editor's preview and the month calendar
show times in the user's time zone (profile)."""

from __future__ import annotations

import datetime as dt

from playwright.sync_api import Page, expect

from .login import log_in
from .test_ui import Demo, demo, page  # noqa: F401  (the demo process and the browser page)

SUBMIT = "#window-form button[type=submit]"


def logged_in(page: Page, demo: Demo) -> None:  # noqa: F811
    page.goto(demo.url)
    if "/login" in page.url:
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")


def test_windows_form_drops_a_server_error_once_its_field_is_fixed(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    logged_in(page, demo)
    page.goto(demo.url + "windows")
    page.fill("#w-name", "n" * 101)
    page.fill("#w-dur", "0")
    page.click(SUBMIT)
    expect(page.locator("#err-name")).to_be_visible()
    expect(page.locator("#err-duration_minutes")).to_be_visible()

    page.fill("#w-dur", "60")
    page.press("#w-dur", "Tab")  # a change: the preview finds the duration fine now
    expect(page.locator("#err-duration_minutes")).to_have_count(0)
    expect(page.locator("#err-name")).to_be_visible()  # not fixed yet: it stays

    page.fill("#w-name", "nightly")
    expect(page.locator("#err-name")).to_have_count(0)
    expect(page.locator("#w-dur")).not_to_have_attribute("aria-invalid", "true")


def test_window_preview_and_calendar_show_the_users_zone(
    demo: Demo,  # noqa: F811
    page: Page,  # noqa: F811
) -> None:
    logged_in(page, demo)
    page.goto(demo.url + "profile")
    page.select_option("#time-zone", "Asia/Kolkata")
    page.click("text=Save time zone")
    expect(page.locator(".notice")).to_have_text("Time zone saved")

    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=20)  # within the preview's 120 days
    if (day + dt.timedelta(days=1)).month != day.month:
        day -= dt.timedelta(days=2)  # both days in one month's grid
    after = day + dt.timedelta(days=1)
    page.goto(demo.url + "windows")
    page.fill("#w-name", "late")
    page.select_option("#w-rec", "once")
    page.fill("#w-date", day.isoformat())
    page.fill("#w-time", "17:30:00")
    page.fill("#w-dur", "120")
    page.fill("#w-tz", "UTC")
    page.press("#w-tz", "Tab")
    # 17:30 UTC is 23:00 in India (+05:30).
    expect(page.locator("#window-preview")).to_contain_text(f"{day.isoformat()} 23:00")
    hover = f"{day.isoformat()} 17:30:00 UTC"  # each occurrence: UTC on hover
    expect(page.locator("#window-preview time").first).to_have_attribute("title", hover)
    page.click(SUBMIT)
    page.goto(demo.url + f"windows?month={day.isoformat()[:7]}")
    expect(page.locator("#cal-title")).to_contain_text("Asia/Kolkata")
    first = page.locator(f'#calendar td[data-date="{day.isoformat()}"] .window-entry')
    expect(first).to_contain_text("23:00\u201324:00")
    expect(first.locator("time").first).to_have_attribute("title", hover)
    second = page.locator(f'#calendar td[data-date="{after.isoformat()}"] .window-entry')
    expect(second).to_contain_text("00:00\u201301:00")
