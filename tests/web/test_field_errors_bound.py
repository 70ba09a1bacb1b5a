"""A field's error is programmatically tied to its field (issue 16 review rvA point 3): the
input carries aria-invalid="true" and aria-describedby="err-KEY" naming the message shown
beside it, on the Deploy, window, blackout, audit filter and waiver forms (the audit
filter's beside each field, not only in a list). Blackout errors name the field's label, not
an internal key, and describe a date-time typed in the user's zone in that zone's own format,
not as a UTC instant."""

from __future__ import annotations

import html
import re

import httpx2
import pytest

from .conftest import form_token

pytestmark = pytest.mark.timeout(60)


def field_tag(page: str, name: str) -> str:
    """The opening tag of the input/select named ``name``."""
    found = re.search(rf'<(?:input|select)\b[^>]*\bname="{name}"[^>]*>', page)
    assert found is not None, name
    return found[0]


def message(page: str, key: str) -> str:
    found = re.search(rf'<p class="error" id="err-{key}">([^<]*)</p>', page)
    assert found is not None, key
    return html.unescape(found[1])


def assert_bound(page: str, name: str, key: str) -> str:
    tag = field_tag(page, name)
    assert 'aria-invalid="true"' in tag, tag
    described = re.search(r'aria-describedby="([^"]*)"', tag)
    assert described is not None and f"err-{key}" in described[1].split(), tag
    return message(page, key)


async def test_deploy_field_errors_are_tied_to_their_inputs(client: httpx2.AsyncClient) -> None:
    host = (await client.post("/api/v1/hosts", json={"name": "127.80.1.1"})).json()["id"]
    token = form_token((await client.get("/deploy")).text)
    page = await client.post(
        "/deploy",
        data={"host_ids": str(host), "reboot_delay_s": "-5", "batch_percent": "500",
              "failure_threshold": "x", "csrf_token": token},
    )  # fmt: skip
    assert page.status_code == 422
    for key in ("reboot_delay_s", "batch_percent", "failure_threshold"):
        assert_bound(page.text, key, key)
    schedule = await client.post(
        "/deploy", data={"host_ids": str(host), "schedule": "later", "csrf_token": token}
    )
    fieldset = re.search(r"<fieldset[^>]*><legend>When</legend>", schedule.text)
    assert fieldset is not None and 'aria-describedby="err-schedule"' in fieldset[0], fieldset
    message(schedule.text, "schedule")


async def test_window_form_errors_are_tied_to_their_inputs(client: httpx2.AsyncClient) -> None:
    token = form_token((await client.get("/windows")).text)
    page = await client.post(
        "/windows",
        data={"target": "", "recurrence": "daily", "start_date": "2026-12-01",
              "start_time": "02:00", "duration_minutes": "0", "timezone": "Mars/Base",
              "csrf_token": token},
    )  # fmt: skip
    assert page.status_code == 422
    assert_bound(page.text, "duration_minutes", "duration_minutes")
    assert_bound(page.text, "timezone", "timezone")


async def test_blackout_errors_name_the_field_label_and_the_zone_format(
    client: httpx2.AsyncClient,
) -> None:
    token = form_token((await client.get("/windows")).text)
    backwards = await client.post(
        "/blackouts",
        data={"name": "freeze", "starts_at": "2026-12-02T10:00", "ends_at": "2026-12-01T10:00",
              "csrf_token": token},
    )  # fmt: skip
    assert backwards.status_code == 422
    said = assert_bound(backwards.text, "ends_at", "blackout_ends_at")
    assert "starts_at" not in said and "From" in said, said
    garbled = await client.post(
        "/blackouts",
        data={"name": "freeze", "starts_at": "next tuesday", "ends_at": "2026-12-01T10:00",
              "csrf_token": token},
    )  # fmt: skip
    said = assert_bound(garbled.text, "starts_at", "blackout_starts_at")
    assert "T02:00:00Z" not in said and "2026-12-01 02:00" in said and "UTC" in said, said


async def test_audit_filter_errors_sit_beside_their_inputs(client: httpx2.AsyncClient) -> None:
    page = await client.get("/audit", params={"since": "yesterday", "until": "soon"})
    assert page.status_code == 422
    assert_bound(page.text, "since", "since")
    assert_bound(page.text, "until", "until")


async def test_waiver_errors_are_tied_to_their_inputs(client: httpx2.AsyncClient) -> None:
    token = form_token((await client.get("/waivers")).text)
    page = await client.post(
        "/waivers",
        data={"host_id": "x", "owner": "", "reason": "r", "expires_at": "soon",
              "csrf_token": token},
    )  # fmt: skip
    assert page.status_code == 422
    assert_bound(page.text, "expires_at", "expires_at")
    assert_bound(page.text, "owner", "owner")
