"""The Reports, waivers and dashboard compliance figures in a real headless Chromium against
`patch-manager demo` (its simulated fleet polled for real): charts under the CSP in light and
dark mode, CSV / PDF / evidence downloads, and a waiver recorded through the form."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from typing import Any

import pypdf
from playwright.sync_api import Page, expect

from .login import log_in as log_in_as
from .test_ui import CSP_RECORDER, Demo, demo, page, shot

__all__ = ["demo", "page"]  # the module-scoped fixtures of test_ui, shared


def log_in(demo: Demo, page: Page) -> None:
    page.goto(demo.url)
    if "/login" in page.url:
        log_in_as(page, demo.url, "admin", demo.password, demo.totp)
        expect(page.locator("h1")).to_have_text("Fleet")


def test_reports_page_charts_and_downloads_in_light_and_dark(demo: Demo, page: Page) -> None:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(CSP_RECORDER)
    log_in(demo, page)
    # the demo fleet is polled: every host gets a verdict other than "unknown". The dashboard's
    # live counts say when every host has answered; the report page is rendered per request, so
    # it is loaded again until its stored figures have caught up (bounded).
    page.goto(demo.url)
    expect(page.locator('[data-count="pending"]')).to_have_text("0", timeout=60_000)
    unknown = page.locator('[data-figure="unknown"]')
    for _ in range(100):
        page.goto(demo.url + "reports?kind=compliance")
        if unknown.inner_text().strip() == "0":
            break
    expect(unknown).to_have_text("0")
    for kind in ("compliance", "patch-history", "exposure", "reboots"):
        response = page.goto(demo.url + f"reports?kind={kind}")
        assert response is not None and response.status == 200, kind
        assert page.evaluate("window.__cspViolations") == [], kind
    page.goto(demo.url + "reports?kind=compliance")
    expect(page.locator("svg.chart").first).to_be_visible()
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        fill = page.evaluate(
            "getComputedStyle(document.querySelector('.chart-text')).fill"
        )  # text in the chart follows the theme's foreground
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert fill != background, theme
        shot(page, f"20-reports-{theme}")
    with page.expect_download() as csv_download:
        page.click("text=CSV")
    text = open(csv_download.value.path()).read()  # noqa: SIM115 - read once
    assert text.startswith("host_id,host,address,groups,status") and len(text.splitlines()) == 9
    with page.expect_download() as pdf_download:
        page.click("text=PDF")
    pdf = pypdf.PdfReader(pdf_download.value.path())
    assert "Compliance report" in pdf.pages[0].extract_text()
    with page.expect_download() as evidence:
        page.click("text=Auditor evidence pack (ZIP)")
    pack = zipfile.ZipFile(io.BytesIO(open(evidence.value.path(), "rb").read()))  # noqa: SIM115
    assert {f["name"] for f in json.loads(pack.read("manifest.json"))["files"]} >= {
        "compliance-summary.json",
        "compliance-report.pdf",
    }
    assert errors == []


def test_waiver_recorded_through_the_form_appears_on_the_dashboard(demo: Demo, page: Page) -> None:
    log_in(demo, page)
    page.goto(demo.url + "waivers")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    values: dict[str, Any] = {
        "#w-host_id": "1",
        "#w-package": "openssl",
        "#w-owner": "sec team",
        "#w-reason": "vendor fix pending",
        "#w-expires_at": expires,
    }
    for selector, value in values.items():
        page.fill(selector, value)
    page.click("form[action='/waivers'] button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Waiver recorded")
    expect(page.locator("tr[data-waiver]")).to_contain_text("active")
    shot(page, "21-waivers")
    page.goto(demo.url)
    expect(page.locator('[data-figure="expiring-waivers"]')).to_have_text("1")
    expect(page.locator('[data-figure="compliance-percent"]')).to_contain_text("%")
    shot(page, "22-dashboard-compliance")
