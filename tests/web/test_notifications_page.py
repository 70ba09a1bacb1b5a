"""The Notifications page: one's own subscription, and for admins the SMTP form (field errors
beside the fields, the password never echoed), the test message's result and the outbox."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import httpx2
import pytest

from actors.notifier import Notifier
from ca import Sealer
from storage import get_user
from storage.notifications import get_notification_settings, get_subscription

from ..actors.smtp_server import smtp_server
from ..conftest import Pki
from .conftest import WebRig, form_token

pytestmark = pytest.mark.timeout(60)


async def token(client: httpx2.AsyncClient) -> str:
    page = await client.get("/notifications")
    assert page.status_code == 200, page.text
    return form_token(page.text)


async def test_the_page_shows_the_smtp_form_and_the_outbox_to_an_admin(
    client: httpx2.AsyncClient,
) -> None:
    page = await client.get("/notifications")
    assert page.status_code == 200
    for marker in ('id="subscription-form"', 'id="smtp-form"', 'id="outbox-stats"',
                   "No messages yet.", 'href="/notifications"'):  # fmt: skip
        assert marker in page.text
    assert "<script>" not in page.text and "style=" not in page.text


async def test_saving_ones_subscription_from_the_page(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    answer = await client.post("/notifications/subscription", data={
        "csrf_token": await token(client), "email": "me@example.test",
        "events": ["job_failed", "certificate_expiry"],
    })  # fmt: skip
    assert answer.status_code == 303
    assert "Subscriptions+saved" in answer.headers["location"]
    admin = await web_rig.db.run(get_user, "admin")
    assert admin is not None
    found = await web_rig.db.run(get_subscription, admin.id)
    assert found is not None
    assert (found.email, found.events) == ("me@example.test", ("job_failed", "certificate_expiry"))


async def test_a_refused_smtp_form_shows_the_errors_beside_the_fields_and_not_the_password(
    client: httpx2.AsyncClient, web_rig: WebRig
) -> None:
    answer = await client.post("/notifications/settings", data={
        "csrf_token": await token(client), "enabled": "on", "smtp_host": "192.0.2.7",
        "smtp_port": "25", "security": "none", "from_address": "pm@example.test",
        "password": "do-not-echo-me",
    })  # fmt: skip
    assert answer.status_code == 422
    assert 'id="smtp-security-error"' in answer.text
    assert 'value="192.0.2.7"' in answer.text
    assert "do-not-echo-me" not in answer.text
    port = await client.post("/notifications/settings", data={
        "csrf_token": await token(client), "smtp_port": "99999", "security": "tls",
    })  # fmt: skip
    assert port.status_code == 422 and 'id="smtp-smtp_port-error"' in port.text
    assert (await web_rig.db.run(get_notification_settings)).enabled is False


async def test_the_test_button_shows_the_result_of_a_real_delivery(
    client: httpx2.AsyncClient, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
    web_rig.app.state.notifier = Notifier(
        web_rig.db, sealer=Sealer(secrets.token_bytes(32)), ssl_context=context
    )
    with smtp_server(pki, tmp_path) as server:
        saved = await client.post("/notifications/settings", data={
            "csrf_token": await token(client), "smtp_host": "127.0.0.1",
            "smtp_port": str(server.port), "security": "none", "from_address": "pm@example.test",
            "timeout_s": "5", "unreachable_minutes": "30", "certificate_days": "14",
            "reminder_minutes": "60",
        })  # fmt: skip
        assert saved.status_code == 303, saved.text
        result = await client.post("/notifications/test", data={
            "csrf_token": await token(client), "to": "ops@example.test",
        })  # fmt: skip
    assert result.status_code == 200
    assert f"Sent: sent to ops@example.test through 127.0.0.1:{server.port}" in result.text
    assert [m["To"] for m in server.recorder.messages] == ["ops@example.test"]
