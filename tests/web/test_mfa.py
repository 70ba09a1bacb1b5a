"""Mandatory second factor (R-7.2): TOTP codes (valid, wrong, replayed, clock skew), recovery
codes (once each), a user without a factor confined to enrolment, the pending login between
password and code, sealed secrets, removing factors, the admins' reset."""

from __future__ import annotations

import dataclasses
import re
import time

import httpx2
import pyotp
import pytest

from storage import get_user
from web.auth import MFA_COOKIE, SESSION_COOKIE, hash_token

from ..conftest import fleet_addresses
from .conftest import TOTP, WebRig, assert_envelope, enrol_totp, form_token, login, totp_code
from .test_login import STRONG, first_login, make_user, post_login


@pytest.fixture
async def fresh(web_rig: WebRig) -> httpx2.AsyncClient:
    """Another anonymous client of the app (from another address than ``client``)."""
    transport = httpx2.ASGITransport(app=web_rig.app, client=("10.0.9.1", 4000))
    return httpx2.AsyncClient(transport=transport, base_url="http://testserver")


async def password_step(client: httpx2.AsyncClient, rig: WebRig) -> httpx2.Response:
    response = await post_login(client, "admin", rig.password)
    assert response.status_code == 303 and response.headers["location"] == "/login/mfa"
    return response


async def test_a_correct_password_alone_starts_no_session_and_a_valid_totp_code_does(
    web_rig: WebRig, fresh: httpx2.AsyncClient
) -> None:
    await password_step(fresh, web_rig)
    assert SESSION_COOKIE not in fresh.cookies and MFA_COOKIE in fresh.cookies
    assert (await fresh.get("/")).headers["location"].startswith("/login?next=")
    form = await fresh.get("/login/mfa")
    assert form.status_code == 200 and 'name="code"' in form.text
    done = await fresh.post("/login/mfa", data={"code": totp_code(web_rig.totp)})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert SESSION_COOKIE in fresh.cookies
    assert (await fresh.get("/api/v1/hosts")).status_code == 200


async def test_a_wrong_code_is_refused_and_five_end_the_pending_login(
    web_rig: WebRig, fresh: httpx2.AsyncClient
) -> None:
    web_rig.auth.throttle.cap = 0.0  # the address delay has its own tests
    await password_step(fresh, web_rig)
    for left in (4, 3, 2, 1):
        wrong = await fresh.post("/login/mfa", data={"code": "000000"})
        assert wrong.status_code == 401 and f"{left} attempt(s) left" in wrong.text
    last = await fresh.post("/login/mfa", data={"code": "000000"})
    assert last.status_code == 303 and last.headers["location"] == "/login"
    # The pending login is gone: even the right code does not help now.
    late = await fresh.post("/login/mfa", data={"code": totp_code(web_rig.totp)})
    assert late.headers["location"] == "/login" and SESSION_COOKIE not in fresh.cookies


async def test_a_used_totp_code_is_refused_for_its_step(
    web_rig: WebRig, fresh: httpx2.AsyncClient
) -> None:
    fixed = time.time() // 30 * 30 + 15  # mid-step: the code cannot go stale meanwhile
    web_rig.auth.mfa.clock = lambda: fixed
    code = pyotp.TOTP(web_rig.totp).at(fixed)
    await password_step(fresh, web_rig)
    assert (await fresh.post("/login/mfa", data={"code": code})).status_code == 303
    other = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=web_rig.app, client=("10.0.9.2", 4000)),
        base_url="http://testserver",
    )
    await password_step(other, web_rig)
    replay = await other.post("/login/mfa", data={"code": code})
    assert replay.status_code == 401 and "already used" in replay.text
    assert SESSION_COOKIE not in other.cookies


@pytest.mark.parametrize(("offset", "accepted"), [(-30, True), (30, True), (-60, False),
                                                  (60, False)])  # fmt: skip
async def test_clock_skew_of_one_step_is_accepted_and_two_steps_are_refused(
    web_rig: WebRig, fresh: httpx2.AsyncClient, offset: int, accepted: bool
) -> None:
    fixed = time.time() // 30 * 30 + 15
    web_rig.auth.mfa.clock = lambda: fixed
    await password_step(fresh, web_rig)
    answer = await fresh.post(
        "/login/mfa", data={"code": pyotp.TOTP(web_rig.totp).at(fixed + offset)}
    )
    assert answer.status_code == (303 if accepted else 401)


async def test_a_recovery_code_logs_in_once(
    web_rig: WebRig, client: httpx2.AsyncClient, fresh: httpx2.AsyncClient
) -> None:
    page = await client.get("/security")
    assert "0 unused recovery code(s)" in page.text
    shown = await client.post(
        "/security/recovery-codes", data={"csrf_token": form_token(page.text)}
    )
    codes = re.findall(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b", shown.text)
    assert len(set(codes)) == 10
    await password_step(fresh, web_rig)
    used = await fresh.post("/login/mfa", data={"code": codes[0].upper()})  # any case
    assert used.status_code == 303 and SESSION_COOKIE in fresh.cookies
    assert "9 unused recovery code(s)" in (await client.get("/security")).text
    again = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=web_rig.app, client=("10.0.9.3", 4000)),
        base_url="http://testserver",
    )
    await password_step(again, web_rig)
    refused = await again.post("/login/mfa", data={"code": codes[0]})
    assert refused.status_code == 401 and SESSION_COOKIE not in again.cookies


async def test_a_user_without_a_factor_reaches_only_enrolment(
    web_rig: WebRig, client: httpx2.AsyncClient, fresh: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "nofactor")
    response = await post_login(fresh, "nofactor", one_time)
    assert response.headers["location"] == "/password"  # the password first
    page = await fresh.get("/password")
    changed = await fresh.post(
        "/password",
        data={"csrf_token": form_token(page.text), "current_password": one_time,
              "new_password": STRONG},
    )  # fmt: skip
    assert changed.status_code == 303
    for path in ("/", "/hosts", "/profile", "/security", "/users"):
        assert (await fresh.get(path)).headers["location"] == "/mfa/setup", path
    assert_envelope(await fresh.get("/api/v1/hosts"), 403, "mfa_enrolment_required")
    setup = await fresh.get("/mfa/setup")
    assert setup.status_code == 200 and "<svg" in setup.text and "otpauth" not in setup.text
    secret = re.search(r'data-secret="([A-Z2-7]+)"', setup.text)
    assert secret is not None
    wrong = await fresh.post("/mfa/totp", data={"csrf_token": form_token(setup.text),
                                                "code": "123456"})  # fmt: skip
    assert wrong.status_code == 422 and (await fresh.get("/")).status_code == 303
    await enrol_totp(fresh, "nofactor")
    assert TOTP["nofactor"] == secret[1]  # the same secret until it is confirmed
    assert (await fresh.get("/api/v1/hosts")).status_code == 200
    # The next login asks for a code.
    again = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=web_rig.app, client=("10.0.9.4", 4000)),
        base_url="http://testserver",
    )
    assert (await post_login(again, "nofactor", STRONG)).headers["location"] == "/login/mfa"


async def test_the_totp_secret_is_sealed_in_the_database(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    rows = await web_rig.db.run(
        lambda c: c.execute("SELECT secret_sealed FROM mfa_totp").fetchall()
    )
    assert len(rows) == 1
    assert web_rig.totp not in rows[0][0]
    assert web_rig.auth.mfa.sealer.unseal(rows[0][0]) == web_rig.totp


async def test_the_last_factor_cannot_be_removed(client: httpx2.AsyncClient) -> None:
    page = await client.get("/security")
    refused = await client.post("/security/totp/remove", data={"csrf_token": form_token(page.text)})
    assert refused.status_code == 409 and "mandatory" in refused.text


async def test_an_admin_resets_a_users_factors_their_sessions_end_and_they_enrol_again(
    web_rig: WebRig, client: httpx2.AsyncClient, fresh: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "resetme")
    await first_login(fresh, "resetme", one_time)
    assert (await fresh.get("/api/v1/hosts")).status_code == 200
    user = await web_rig.db.run(get_user, "resetme")
    assert user is not None
    page = await client.get("/users")
    done = await client.post(f"/users/{user.id}/reset-mfa",
                             data={"csrf_token": form_token(page.text)})  # fmt: skip
    assert done.status_code == 303 and "1 session(s) ended" in done.headers["location"].replace(
        "+", " "
    ).replace("%28", "(").replace("%29", ")")
    assert (await fresh.get("/api/v1/hosts")).status_code == 401
    again = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=web_rig.app, client=("10.0.9.5", 4000)),
        base_url="http://testserver",
    )
    csrf = await login(again, STRONG, "resetme")  # enrols a new authenticator app
    assert csrf and TOTP["resetme"]


async def test_the_second_step_without_a_pending_login_goes_back_to_the_password(
    anonymous: httpx2.AsyncClient,
) -> None:
    assert (await anonymous.get("/login/mfa")).headers["location"] == "/login"
    answer = await anonymous.post("/login/mfa", data={"code": "123456"})
    assert answer.headers["location"] == "/login" and SESSION_COOKIE not in anonymous.cookies
    assert_envelope(await anonymous.post("/login/webauthn/options"), 400, "no_pending_login")


async def stale_second_factor(rig: WebRig, client: httpx2.AsyncClient) -> None:
    """The client's session proved its second factor ten minutes ago."""
    token = client.cookies[SESSION_COOKIE]
    await rig.db.run(
        lambda c: c.execute(
            "UPDATE sessions SET mfa_at = now() - interval '10 minutes' WHERE token_hash = %s",
            (hash_token(token),),
        )
    )


async def test_user_changes_need_a_second_factor_within_five_minutes(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await make_user(client, "target")
    user = await web_rig.db.run(get_user, "target")
    assert user is not None
    await stale_second_factor(web_rig, client)
    api = await client.patch(f"/api/v1/users/{user.id}", json={"role": "auditor"})
    assert_envelope(api, 403, "reauth_required")
    created = await client.post("/api/v1/users", json={"username": "later", "role": "auditor"})
    assert_envelope(created, 403, "reauth_required")
    page = await client.get("/users")
    form = await client.post(
        f"/users/{user.id}",
        data={"csrf_token": form_token(page.text), "role": "auditor"},
        headers={"referer": "http://testserver/users"},
    )
    assert form.status_code == 303 and form.headers["location"].startswith("/security?next=")
    prompt = await client.get(form.headers["location"])
    assert 'action="/reauth"' in prompt.text and 'value="/users"' in prompt.text
    wrong = await client.post("/reauth", data={"csrf_token": form_token(prompt.text),
                                               "code": "000000", "next": "/users"})  # fmt: skip
    assert wrong.status_code == 422
    confirmed = await client.post(
        "/reauth",
        data={"csrf_token": form_token(prompt.text), "code": totp_code(web_rig.totp),
              "next": "/users"},
    )  # fmt: skip
    assert confirmed.status_code == 303 and confirmed.headers["location"].startswith("/users")
    again = await client.patch(f"/api/v1/users/{user.id}", json={"role": "auditor"})
    assert again.status_code == 200 and again.json()["role"] == "auditor"


async def test_a_reboot_now_of_more_hosts_than_the_limit_needs_reauth(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    web_rig.auth.settings = dataclasses.replace(web_rig.auth.settings, reauth_reboot_hosts=1)
    base = fleet_addresses(2).rsplit(".", 1)[0]
    ids = []
    for last in (1, 2):
        made = await client.post("/api/v1/hosts", json={"name": f"{base}.{last}"})
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    await stale_second_factor(web_rig, client)
    job = {"kind": "reboot", "schedule": "now", "host_ids": ids}
    assert_envelope(await client.post("/api/v1/jobs", json=job), 403, "reauth_required")
    one = await client.post("/api/v1/jobs", json=job | {"host_ids": ids[:1]})
    assert one.status_code == 201, one.text  # within the limit: no second factor needed
    windowed = await client.post("/api/v1/jobs", json=job | {"schedule": "window"})
    assert windowed.status_code == 201, windowed.text  # not now: no reboot at once
