"""The UI in a real headless Chromium (Debian's package) driven by Playwright, against
`patch-manager demo` running as a real process with its simulated fleet.

Screenshots of every page go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from simulator import control

from ..conftest import make_tmp_dir
from .login import log_in, read_banner

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# A distinct block per PM_TEST_BLOCK_BASE (two suites side by side on one machine).
BASE = f"127.{230 + int(os.environ.get('PM_TEST_BLOCK_BASE', '1')) // 1000}.0"
CONF = """
[agents]
allow_addresses = ["127.0.0.0/8"]
allow_ports = [1]  # the host added by hand answers nowhere
[polling]
backoff_s = [1, 1, 1]
jitter_ratio = 0.0
connect_timeout_s = 2.0
[discovery]
min_prefix_len = 22
"""

pytestmark = pytest.mark.timeout(180)


@dataclass
class Demo:
    url: str
    password: str
    data_dir: Path
    process: subprocess.Popen[str]
    totp: str = ""  # the demo admin's authenticator secret (printed in the banner)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    root = make_tmp_dir("pm-browser-")
    (root / "conf").mkdir()
    (root / "conf" / "patch-manager.toml").write_text(CONF)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patch_manager",
            "demo",
            "--count",
            "8",
            "--bind",
            "127.0.0.1:0",
            "--base-address",
            f"{BASE}.1",
            "--data-dir",
            str(root / "data"),
            "--conf-dir",
            str(root / "conf"),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATCH_MANAGER_PG_FAST": "1"},
    )
    assert process.stdout is not None
    url, password, secret = read_banner(process.stdout)  # URL, password, TOTP secret
    try:
        yield Demo(url, password, root / "data", process, secret)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


@pytest.fixture(scope="module")
def page(demo: Demo) -> Iterator[Page]:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(20_000)
        yield context.new_page()
        browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_login_and_dashboard_with_the_demo_fleet(demo: Demo, page: Page) -> None:
    page.goto(demo.url)
    expect(page).to_have_url(re.compile(r"/login"))
    shot(page, "01-login")
    page.fill("#username", "admin")
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Wrong user name or password")
    log_in(page, demo.url, "admin", demo.password, demo.totp)
    expect(page.locator("h1")).to_have_text("Fleet")
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator('[data-count="healthy"]')).to_have_text("8", timeout=30_000)
    shot(page, "02-dashboard")


def test_host_page_shows_live_state_changes(demo: Demo, page: Page) -> None:
    page.goto(demo.url + "hosts")
    expect(page.locator("table.hosts tbody tr")).to_have_count(8)
    shot(page, "03-hosts")
    page.locator("table.hosts tbody tr", has_text=f"{BASE}.3").locator("a").first.click()
    badge = page.locator("h1 .badge")
    expect(badge).to_have_text("healthy")
    expect(page.locator('#actor-state [data-field="phase"]')).to_have_text("idle")
    shot(page, "04-host")
    # The simulator takes the agent down; the operator asks for a refresh and watches.
    answer = control.request(
        demo.data_dir / "simulator.sock",
        {"action": "faults", "target": f"{BASE}.3", "set": {"down": True}},
    )
    assert answer["ok"]
    page.click("text=Refresh now")
    expect(page.locator(".notice")).to_have_text("Refresh requested")
    expect(page.locator("h1 .badge")).to_have_text("unreachable", timeout=30_000)
    expect(page.locator('#actor-state [data-field="last_error"]')).to_contain_text("refused")
    shot(page, "05-host-unreachable")
    control.request(
        demo.data_dir / "simulator.sock",
        {"action": "faults", "target": f"{BASE}.3", "set": {"down": False}},
    )


def test_discovery_with_a_progress_bar(demo: Demo, page: Page) -> None:
    page.goto(demo.url + "discovery")
    page.fill("#cidr", "10.0.0.0/8")
    page.click("text=Start scan")
    expect(page.locator("#err-cidr")).to_contain_text("the limit is /22")
    page.fill("#cidr", f"{BASE}.0/24")
    page.click("text=Start scan")
    expect(page.locator('[data-scan="state"]')).to_have_text("(finished)", timeout=60_000)
    expect(page.locator("#scan-progress")).to_have_attribute("value", "254")
    expect(page.locator("#scan-results tr")).to_have_count(8)
    shot(page, "06-discovery")
    page.check(f'input[value="{BASE}.2"]')
    page.click("#register-selected")
    expect(page.locator(".notice")).to_contain_text("already registered")


def test_add_a_host_with_validation(demo: Demo, page: Page) -> None:
    page.goto(demo.url + "hosts")
    page.fill("#add-name", "not a host!")
    page.click("text=Add host")
    expect(page.locator("#err-name")).to_contain_text("neither an IP address nor a valid FQDN")
    expect(page.locator("#add-name")).to_have_value("not a host!")
    shot(page, "07-add-host-error")
    page.fill("#add-name", "127.0.0.1")
    page.fill("#add-display", "loopback test")
    page.fill("#add-port", "1")
    page.click("text=Add host")
    expect(page.locator(".notice")).to_have_text("Host 127.0.0.1 registered")
    expect(page.locator("h1")).to_contain_text("loopback test")
    shot(page, "08-host-added")


def test_deploy_in_a_window_then_roll_back_a_host(demo: Demo, page: Page) -> None:
    import datetime as dt

    # A one-time window for host 5 opening in 30 s (demo time scale).
    opens = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    page.goto(demo.url + "windows")
    page.fill("#w-name", "tonight")
    page.select_option("#w-target", "host:5")
    page.select_option("#w-rec", "once")
    page.fill("#w-date", opens.date().isoformat())
    page.fill("#w-time", opens.strftime("%H:%M:%S"))
    page.fill("#w-dur", "30")
    page.fill("#w-tz", "UTC")
    expect(page.locator("#window-preview")).to_contain_text(str(opens.year))
    shot(page, "09-window-editor")
    page.click("text=Save window")
    expect(page.locator(".notice")).to_have_text("Window saved")
    expect(page.locator("#calendar .window-entry").first).to_contain_text(opens.strftime("%H:%M"))

    # Queue a deployment for that host: it waits for the window.
    page.goto(demo.url + "deploy?host_ids=5")
    expect(page.locator("#host-count")).to_have_text("1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deploy-button")
    expect(page.locator(".notice")).to_contain_text("created for 1 host(s)")
    badge = page.locator("[data-job-row]").first
    assert badge.inner_text() in ("queued", "waiting_window")
    assert dt.datetime.now(dt.UTC) < opens  # it did not start before the window
    shot(page, "10-job-waiting")
    # The window opens; per-host progress arrives live; the page shows the outcome.
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    assert dt.datetime.now(dt.UTC) >= opens
    shot(page, "11-job-succeeded")

    # Roll the host back (this simulated agent accepts downgrades; see the closing note).
    answer = control.request(
        demo.data_dir / "simulator.sock",
        {"action": "faults", "target": f"{BASE}.5", "set": {"downgrades": "allow"}},
    )
    assert answer["ok"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Roll back host")
    expect(page.locator(".notice")).to_contain_text("Rollback job")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("h1 + p")).to_contain_text("rollback of")
    shot(page, "12-rollback")


# Records every Content-Security-Policy violation the page reports (before any page script).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def test_every_page_works_under_the_csp_without_console_errors(demo: Demo, page: Page) -> None:
    errors: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            errors.append(f"{msg.text} ({msg.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(CSP_RECORDER)

    def visit(path: str) -> None:
        response = page.goto(demo.url + path.lstrip("/"))
        assert response is not None and response.status == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        page.wait_for_load_state("networkidle")
        violations = page.evaluate("window.__cspViolations")
        assert violations == [], (path, violations)
        assert errors == [], (path, errors)

    page.goto(demo.url)
    if "/login" in page.url:  # run alone
        log_in(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")
    visit("/")
    expect(page.locator("#live-status")).to_have_text("live")  # the WebSocket under the CSP
    page.locator("#theme-toggle").click()  # the theme script runs from a file
    assert page.evaluate("document.documentElement.dataset.theme") in ("light", "dark")
    for path in [
        "/hosts",
        "/hosts/1",
        "/groups",
        "/discovery",
        "/deploy",
        "/jobs",
        "/windows",
        "/reports",
        "/waivers",
        "/certificates",
        "/enrolments",
        "/settings",
        "/users",
        "/profile",
        "/security",
        "/mfa/setup",
    ]:
        visit(path)
    page.goto(demo.url + "jobs")
    if page.locator("a[href^='/jobs/']").count() == 0:  # run alone: queue a job to look at
        page.goto(demo.url + "deploy?host_ids=1")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#deploy-button")
        expect(page.locator(".notice")).to_contain_text("created for 1 host(s)")
        page.goto(demo.url + "jobs")
    job = page.locator("a[href^='/jobs/']").first.get_attribute("href")
    assert job is not None
    visit(job)
    page.click("form[action='/logout'] button")
    expect(page).to_have_url(re.compile(r"/login"))
    visit("/login")
