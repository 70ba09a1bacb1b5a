"""Every form reports every invalid field beside the field, all at once (issue 16 point 3): a
field error no longer hides the cross-field problems of the same post, and the forms load in a
state that is valid as it stands."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import httpx2
import pytest

from .conftest import form_token

pytestmark = pytest.mark.timeout(60)


def shown_errors(page: str) -> dict[str, str]:
    """The message beside each field (``<p class="error" id="err-FIELD">``)."""
    found = re.findall(r'<p class="error" id="err-([a-z_]+)">([^<]*)</p>', page)
    return {key: html.unescape(message) for key, message in found}


class FormDefaults(HTMLParser):
    """The values a form posts when submitted as loaded (inputs, checked boxes, selects)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.select: str | None = None
        self.first_option: str | None = None
        self.values: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and "name" in a:
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.values.append((a["name"], a.get("value", "on")))
        elif tag == "select":
            self.select, self.first_option = a["name"], None
        elif tag == "option" and self.select is not None:
            value = a.get("value", "")
            if self.first_option is None:
                self.first_option = value
            if "selected" in a:
                self.values.append((self.select, value))
                self.select = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        if tag == "select" and self.select is not None:
            self.values.append((self.select, self.first_option or ""))
            self.select = None


def defaults(page: str, form_id: str) -> list[tuple[str, str]]:
    parser = FormDefaults(form_id)
    parser.feed(page)
    return parser.values


async def add_host(client: httpx2.AsyncClient) -> int:
    response = await client.post("/api/v1/hosts", json={"name": "127.80.0.1"})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def test_deploy_form_reports_field_errors_and_the_missing_package_list_together(
    client: httpx2.AsyncClient,
) -> None:
    host = await add_host(client)
    token = form_token((await client.get("/deploy")).text)
    page = await client.post(
        "/deploy",
        data={
            "host_ids": str(host),
            "selection": "list",
            "reboot_delay_s": "-5",
            "batch_percent": "500",
            "failure_threshold": "x",
            "csrf_token": token,
        },
    )
    assert page.status_code == 422
    errors = shown_errors(page.text)
    assert errors["reboot_delay_s"] == "must be between 0 and 86400"
    assert errors["batch_percent"] == "must be between 1 and 100"
    assert errors["failure_threshold"] == "must be a whole number"
    assert errors["packages"] == "name at least one package"


async def test_windows_form_reports_weekday_and_time_zone_beside_bad_time_and_day(
    client: httpx2.AsyncClient,
) -> None:
    host = await add_host(client)
    token = form_token((await client.get("/windows")).text)
    nth = await client.post(
        "/windows",
        data={
            "target": f"host:{host}",
            "recurrence": "monthly_nth",
            "nth": "9",
            "start_time": "25:00",
            "timezone": "Mars/Olympus",
            "csrf_token": token,
        },
    )
    assert nth.status_code == 422
    errors = shown_errors(nth.text)
    assert errors["nth"] == "must be between -1 and 5"
    assert errors["start_time"] == "a time such as 02:00"
    assert errors["weekdays"] == "choose at least one weekday"
    assert errors["timezone"].startswith("unknown IANA time zone 'Mars/Olympus'")
    day = await client.post(
        "/windows",
        data={
            "target": f"host:{host}",
            "recurrence": "monthly_day",
            "day_of_month": "40",
            "duration_minutes": "0",
            "csrf_token": token,
        },
    )
    assert day.status_code == 422
    assert set(shown_errors(day.text)) == {"day_of_month", "duration_minutes"}


async def test_windows_form_as_loaded_saves_a_window(client: httpx2.AsyncClient) -> None:
    await add_host(client)
    page = (await client.get("/windows")).text
    assert shown_errors(page) == {}
    values = defaults(page, "window-form")
    assert ("weekdays", "1") in values, values  # weekly on Tuesday unless changed
    data: dict[str, list[str]] = {}
    for key, value in values:
        data.setdefault(key, []).append(value)
    saved = await client.post("/windows", data=data)
    assert saved.status_code == 303, shown_errors(saved.text)


async def test_window_preview_of_an_unusable_draft_answers_its_problems_not_an_error(
    client: httpx2.AsyncClient,
) -> None:
    """The editor asks about every draft as it is typed: a draft that cannot be saved yet is
    an answer (each problem by field), not a 4xx the browser logs as a console error."""
    response = await client.post(
        "/api/v1/windows/preview",
        json={"recurrence": "weekly", "weekdays": [], "timezone": "Mars/Olympus"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["occurrences"] == []
    assert body["problems"]["weekdays"] == "choose at least one weekday"
    assert body["problems"]["timezone"].startswith("unknown IANA time zone")
    good = await client.post("/api/v1/windows/preview", json={"recurrence": "daily"})
    assert good.status_code == 200
    assert good.json()["problems"] == {}
    assert len(good.json()["occurrences"]) == 8


def error_texts(page: str) -> list[str]:
    """Every error message a page shows (beside fields, in summaries), as text."""
    found = re.findall(
        r'<(?:p|li|div)[^>]*class="error[^"]*"[^>]*>(.*?)</(?:p|li|div)>', page, re.S
    )
    return [html.unescape(re.sub("<[^>]+>", "", item)).strip() for item in found]


NAME_RULE = "letters, digits, '.', '_' or '-', up to 64 characters"
OTHER_FORMS = {
    "/groups": ({"name": "bad name!"}, [NAME_RULE]),
    "/users": (
        {"username": "x y", "role": "boss"},
        [NAME_RULE, "input should be 'admin', 'operator' or 'auditor'"],
    ),
    "/waivers": (
        {"host_id": "abc", "owner": "", "reason": "", "expires_at": "nope"},
        [
            "must be a whole number",
            "required",
            "required",
            "a date-time such as 2026-12-01T02:00:00Z",
        ],
    ),
    "/settings/repo-configs": (
        {"distro_id": "BAD ID", "keyring_path": "relative"},
        [NAME_RULE, "an absolute file path under /etc/apt/keyrings/"],
    ),
    "/hosts/add": (
        {"name": "db1.example.test", "port": "0", "groups": "b d", "display_name": "x" * 300},
        [
            "string should have at most 100 characters",
            f"item 1: {NAME_RULE}",
            "must be between 1 and 65535",
        ],
    ),
}


@pytest.mark.parametrize("path", sorted(OTHER_FORMS))
async def test_other_forms_report_every_invalid_field_at_once(
    client: httpx2.AsyncClient, path: str
) -> None:
    data, expected = OTHER_FORMS[path]
    token = form_token((await client.get("/groups")).text)
    page = await client.post(path, data={**data, "csrf_token": token})
    assert page.status_code == 422
    shown = error_texts(page.text)
    assert len(shown) == len(expected), shown
    for text, want in zip(shown, expected, strict=True):
        assert text.startswith(want), (text, want)
