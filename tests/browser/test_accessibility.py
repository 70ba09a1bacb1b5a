"""Every page in a real Chromium against `patch-manager demo`: no serious or critical WCAG 2.1 AA
violation found by axe-core (light and dark mode), and nothing wider than a 390 px phone screen.

axe-core comes bundled in axe-playwright-python (no download at test time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, StorageState, expect, sync_playwright

from .login import log_in
from .test_ui import CHROMIUM, Demo, demo  # noqa: F401  (the module's demo fleet)

pytestmark = pytest.mark.timeout(300)

# Every page an admin can open with a GET (pages with an id use the demo's first host).
PAGES = (
    "/",
    "/hosts",
    "/hosts/1",
    "/groups",
    "/deploy",
    "/jobs",
    "/windows",
    "/reports",
    "/waivers",
    "/discovery",
    "/users",
    "/certificates",
    "/enrolments",
    "/settings",
    "/settings/sso",
    "/notifications",
    "/audit",
    "/profile",
    "/security",
    "/tokens",
)
# Variants with more tables checked at phone width too (the month calendar, a window's edit form,
# the compliance report's waivers table for one host).
PHONE_EXTRA = ("/windows?month=2026-12", "/windows?edit=1", "/reports?kind=compliance&host_id=1")
SERIOUS = ("serious", "critical")
AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
PHONE = {"width": 390, "height": 844}
# The innermost elements reaching past the screen's right edge (to name them in a failure).
WIDEST = """Array.from(document.querySelectorAll("body *"))
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1
    && !Array.from(e.children).some(c => c.getBoundingClientRect().right > innerWidth + 1))
  .slice(0, 4).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
    + (e.className && typeof e.className === "string" ? "." + e.className.split(" ").join(".") : "")
    + " " + Math.round(e.getBoundingClientRect().right))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def session(browser: Browser, demo: Demo) -> StorageState:  # noqa: F811
    """One login for the module (a TOTP code is single-use within its step): its cookies."""
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    log_in(page, demo.url, "admin", demo.password, demo.totp)
    state = context.storage_state()
    context.close()
    return state


def signed_in(browser: Browser, session: StorageState, url: str, **options: Any) -> Page:
    context = browser.new_context(ignore_https_errors=True, storage_state=session, **options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(url)
    return page


def serious_violations(page: Page) -> list[str]:
    results = Axe().run(page, options=AA)
    found = []
    for violation in results.response["violations"]:
        if violation.get("impact") in SERIOUS:
            targets = [" ".join(node["target"]) for node in violation["nodes"][:3]]
            found.append(f"{violation['id']} ({violation['impact']}): {targets}")
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_no_serious_axe_violation(
    browser: Browser,
    session: StorageState,
    demo: Demo,  # noqa: F811
    scheme: str,
) -> None:
    anonymous = browser.new_context(ignore_https_errors=True, color_scheme=scheme)  # type: ignore[arg-type]
    login = anonymous.new_page()
    login.goto(demo.url.rstrip("/") + "/login")
    problems = {"/login": serious_violations(login)}
    anonymous.close()
    page = signed_in(browser, session, demo.url, color_scheme=scheme)
    for path in PAGES:
        response = page.goto(demo.url.rstrip("/") + path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        problems[path] = serious_violations(page)
    page.context.close()
    assert {path: found for path, found in problems.items() if found} == {}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_at_390px_fits_the_screen_and_has_no_serious_axe_violation(
    browser: Browser,
    session: StorageState,
    demo: Demo,  # noqa: F811
    scheme: str,
) -> None:
    """At phone width tables scroll in their own box: axe's scrollable-region-focusable (a box
    the keyboard cannot scroll) is serious, so every page is checked again at 390 px."""
    page = signed_in(browser, session, demo.url, viewport=PHONE, color_scheme=scheme)
    too_wide = {}
    problems = {}
    for path in ("/login", *PAGES, *PHONE_EXTRA):
        page.goto(demo.url.rstrip("/") + path)
        page.wait_for_load_state("load")
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[path] = (width, page.evaluate(WIDEST))
        problems[path] = serious_violations(page)
    page.context.close()
    assert too_wide == {}
    assert {path: found for path, found in problems.items() if found} == {}


def test_the_collapsed_menu_opens_and_closes_with_the_keyboard(
    browser: Browser,
    session: StorageState,
    demo: Demo,  # noqa: F811
) -> None:
    page = signed_in(browser, session, demo.url, viewport=PHONE)
    hosts = page.locator("#main-nav a[href='/hosts']")
    expect(hosts).to_be_hidden()
    page.focus("#nav-toggle")
    page.keyboard.press("Enter")
    expect(page.locator("#nav-toggle")).to_have_attribute("aria-expanded", "true")
    expect(hosts).to_be_visible()
    page.keyboard.press("Escape")
    expect(hosts).to_be_hidden()
    expect(page.locator("#nav-toggle")).to_be_focused()
    page.context.close()


def test_the_month_calendar_at_390px_scrolls_to_all_seven_days_and_keeps_blackouts_readable(
    browser: Browser,
    session: StorageState,
    demo: Demo,  # noqa: F811
) -> None:
    page = signed_in(browser, session, demo.url.rstrip("/") + "/windows", viewport=PHONE)
    form = page.locator("form[action='/blackouts']")
    form.locator("input[name='name']").fill("QuarterEndFreezeForThePaymentsCluster")
    form.locator("input[name='starts_at']").fill("2027-01-13T08:00")
    form.locator("input[name='ends_at']").fill("2027-01-14T20:00")
    form.locator("button[type='submit']").click()
    page.wait_for_load_state("load")
    page.goto(demo.url.rstrip("/") + "/windows?month=2027-01")
    region = page.locator(".table-scroll:has(#calendar)")
    expect(region).to_have_attribute("tabindex", "0")
    expect(region).to_have_attribute("role", "region")
    region.focus()
    expect(region).to_be_focused()
    page.keyboard.press("ArrowRight")  # the keyboard scrolls the focused region
    page.wait_for_function("e => e.scrollLeft > 0", arg=region.element_handle())
    region.evaluate("e => { e.style.scrollBehavior = 'auto'; e.scrollLeft = e.scrollWidth; }")
    box = region.bounding_box()
    sunday = page.locator("#calendar thead th").nth(6).bounding_box()
    assert box is not None and sunday is not None
    assert sunday["x"] + sunday["width"] <= box["x"] + box["width"] + 1, (sunday, box)
    entries = page.locator("#calendar .blackout-entry")
    assert entries.count() >= 2
    cut = page.evaluate(
        """Array.from(document.querySelectorAll('#calendar .blackout-entry'))
          .filter(e => e.scrollWidth > e.clientWidth + 1
            || e.getBoundingClientRect().right > e.closest('td').getBoundingClientRect().right + 1)
          .map(e => e.textContent)"""
    )
    assert cut == []
    page.context.close()
