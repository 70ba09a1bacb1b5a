"""Notification settings and subscriptions: review F13b findings #3 (password_env), #8 (bad
addresses are 4xx beside the field, never 500) and #9 (a partial PUT changes only what it sends).
"""

from __future__ import annotations

import httpx2
import pytest

from storage.notifications import get_notification_settings

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(60)
SETTINGS = "/api/v1/admin/notifications"
PROFILE = "/api/v1/profile/notifications"
LONG = "a" * 250 + "@example.test"  # 263 characters


@pytest.mark.parametrize("name", ["PM_AUDIT_KEY", "PM_SEALING_KEY", "PM_OIDC_CLIENT_SECRET",
                                  "HOME", "SMTP_PASSWORD", "PM_SMTP_"])  # fmt: skip
async def test_a_password_env_that_is_not_a_pm_smtp_variable_is_refused(
    client: httpx2.AsyncClient, web_rig: WebRig, name: str
) -> None:
    answer = await client.put(SETTINGS, json={
        "smtp_host": "smtp.evil.test", "from_address": "pm@example.test", "password_env": name,
    })  # fmt: skip
    body = assert_envelope(answer, 422)
    assert set(body["details"]["fields"]) == {"password_env"}
    assert "PM_SMTP_" in body["details"]["fields"]["password_env"]
    assert (await web_rig.db.run(get_notification_settings)).password_env == ""


async def test_a_pm_smtp_password_env_is_accepted(client: httpx2.AsyncClient) -> None:
    answer = await client.put(SETTINGS, json={"password_env": "PM_SMTP_PASSWORD"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["password_env"] == "PM_SMTP_PASSWORD"


async def test_a_partial_put_of_the_settings_changes_only_the_fields_it_sends(
    client: httpx2.AsyncClient,
) -> None:
    full = {
        "enabled": True, "smtp_host": "smtp.example.test", "smtp_port": 465, "security": "tls",
        "username": "pm", "from_address": "pm@example.test", "timeout_s": 20,
        "unreachable_minutes": 45,
    }  # fmt: skip
    assert (await client.put(SETTINGS, json=full)).status_code == 200
    answer = await client.put(SETTINGS, json={"timeout_s": 30})
    assert answer.status_code == 200, answer.text
    got = (await client.get(SETTINGS)).json()
    assert {k: got[k] for k in full} == full | {"timeout_s": 30}


@pytest.mark.parametrize("address", ["me\x00@example.test", LONG])
async def test_a_subscription_address_with_nul_or_over_254_characters_is_422_naming_email(
    client: httpx2.AsyncClient, address: str
) -> None:
    answer = await client.put(PROFILE, json={"email": address, "events": ["job_failed"]})
    body = assert_envelope(answer, 422)
    assert "email" in str(body["details"])


@pytest.mark.parametrize("address", ["me\x00@example.test", LONG])
async def test_the_page_shows_a_bad_subscription_address_beside_the_field(
    client: httpx2.AsyncClient, address: str
) -> None:
    page = await client.get("/notifications")
    answer = await client.post("/notifications/subscription", data={
        "csrf_token": form_token(page.text), "email": address, "events": ["job_failed"],
    })  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert 'id="sub-email-error"' in answer.text


@pytest.mark.parametrize("address", ["pm\x00@example.test", LONG])
async def test_the_page_shows_a_bad_from_address_beside_the_field(
    client: httpx2.AsyncClient, address: str
) -> None:
    page = await client.get("/notifications")
    answer = await client.post("/notifications/settings", data={
        "csrf_token": form_token(page.text), "smtp_host": "smtp.example.test",
        "smtp_port": "587", "security": "starttls", "from_address": address,
        "timeout_s": "20", "unreachable_minutes": "30", "certificate_days": "14",
        "reminder_minutes": "60",
    })  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert 'id="smtp-from_address-error"' in answer.text


async def test_a_test_message_to_an_address_with_nul_is_422(client: httpx2.AsyncClient) -> None:
    answer = await client.post(f"{SETTINGS}/test", json={"to": "ops\x00@example.test"})
    assert_envelope(answer, 422)
