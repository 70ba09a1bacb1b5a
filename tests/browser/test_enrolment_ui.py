"""Enrolment end to end in a real Chromium: a simulated agent enrols with `patch-manager demo`
(a real process), waits, is approved on the Enrolment page, receives its files, starts serving
mTLS with them and is polled healthy."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from simulator.catalog import generate_profile
from simulator.enrol import enrol, enrolled_agent

from ..conftest import make_tmp_dir
from .login import log_in, read_banner

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
BLOCK = 230 + int(os.environ.get("PM_TEST_BLOCK_BASE", "1")) // 1000
FLEET = f"127.{BLOCK}.40"  # the demo's own agent
AGENT = f"127.{BLOCK}.41.7"  # the agent that enrols
CONF = '[agents]\nallow_addresses = ["127.0.0.0/8"]\n[polling]\nbackoff_s = [1, 1, 2]\n'

pytestmark = pytest.mark.timeout(180)


class EnrollingAgent:
    """The simulated agent, in its own thread with its own trio loop."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.serving = threading.Event()
        self.error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope = trio.CancelScope()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.serving.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with self._scope:
            files = await enrol(
                self.url, self.directory, machine_id="browser-agent",
                fqdn="browser-agent.example.com", ip_address=AGENT,
                os_details={"name": "Debian GNU/Linux", "version_id": "12"}, poll_interval_s=0.2,
            )  # fmt: skip
            agent, _ = enrolled_agent(files, AGENT, 12443, generate_profile(3, 1), time_scale=0.01)
            async with trio.open_nursery() as nursery:
                await nursery.start(agent.run)
                self.serving.set()
                await trio.sleep_forever()

    def stop(self) -> None:
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self.thread.join(10)


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, str, str]]:
    root = make_tmp_dir("pm-enrol-ui-")
    (root / "conf").mkdir()
    (root / "conf" / "patch-manager.toml").write_text(CONF)
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "demo", "--count", "1", "--bind", "127.0.0.1:0",
         "--base-address", f"{FLEET}.1", "--data-dir", str(root / "data"), "--conf-dir",
         str(root / "conf"), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "PATCH_MANAGER_PG_FAST": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    url, password, secret = read_banner(process.stdout)
    try:
        yield url, password, secret
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(20_000)
        yield context.new_page()
        browser.close()


def test_an_agent_enrols_is_approved_in_the_browser_and_is_polled_healthy(
    demo: tuple[str, str, str], page: Page, tmp_path: Path
) -> None:
    url, password, secret = demo
    agent = EnrollingAgent(url.rstrip("/"), tmp_path / "agent")
    agent.thread.start()
    try:
        log_in(page, url, "admin", password, secret)
        page.goto(url + "enrolments")
        row = page.locator("tr", has_text="browser-agent.example.com")
        for _ in range(50):  # the agent's request arrives within moments
            if row.count():
                break
            page.wait_for_timeout(200)
            page.reload()
        expect(row).to_contain_text(AGENT)
        expect(row).to_contain_text("Debian GNU/Linux 12")
        page.screenshot(path=str(ARTIFACTS / "enrolment-queue.png"), full_page=True)
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Approve").click()
        expect(page.locator(".notice")).to_contain_text("Approved browser-agent.example.com")
        assert agent.serving.wait(60), "the agent did not receive its certificate"
        assert agent.error is None, agent.error
        page.get_by_role("link", name=re.compile(r"^host \d+$")).click()
        badge = page.locator("h1 .badge")
        for _ in range(60):
            if badge.text_content() == "healthy":
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(badge).to_have_text("healthy")
        expect(page.locator("h1")).to_contain_text(re.compile("browser-agent"))
        page.screenshot(path=str(ARTIFACTS / "enrolled-host.png"), full_page=True)
    finally:
        agent.stop()
