"""Review findings on the mandatory second factor (F12m): a session whose second factor is
stale cannot mint recovery codes or change factors, a password-only session ends once its
user enrols, the last factor stays even under concurrent removals, unlocking needs reauth."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import trio

from storage import get_user
from storage.audit import AuditFilter, list_entries
from storage.mfa import add_credential, factors
from web.auth import SESSION_COOKIE, hash_token

from .conftest import WebRig, assert_envelope, enrol_totp, form_token, totp_code
from .test_login import STRONG, first_login, make_user, post_login

CODE = re.compile(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b")


def another(rig: WebRig, n: int) -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=rig.app, client=(f"10.0.12.{n}", 4000))
    return httpx2.AsyncClient(transport=transport, base_url="http://testserver")


async def stale(rig: WebRig, client: httpx2.AsyncClient) -> None:
    token = client.cookies[SESSION_COOKIE]
    await rig.db.run(
        lambda c: c.execute(
            "UPDATE sessions SET mfa_at = now() - interval '1 hour' WHERE token_hash = %s",
            (hash_token(token),),
        )
    )


async def test_a_stale_session_cannot_mint_recovery_codes_to_pass_reauth(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await stale(web_rig, client)
    page = await client.get("/security")
    csrf = form_token(page.text)
    minted = await client.post("/security/recovery-codes", data={"csrf_token": csrf})
    assert minted.status_code == 303 and minted.headers["location"].startswith("/security?")
    assert not CODE.findall(minted.text)
    assert_envelope(
        await client.post("/api/v1/users", json={"username": "evil", "role": "admin"}),
        403,
        "reauth_required",
    )


async def test_a_stale_session_cannot_add_or_remove_factors(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    admin = await web_rig.db.run(get_user, "admin")
    assert admin is not None
    key = await web_rig.db.run(add_credential, admin.id, b"\x01" * 16, b"\x02" * 32, 0, "k1")
    await stale(web_rig, client)
    csrf = form_token((await client.get("/security")).text)
    headers = {"x-csrf-token": csrf}
    assert_envelope(
        await client.post("/mfa/webauthn/options", json={}, headers=headers),
        403,
        "reauth_required",
    )
    assert_envelope(
        await client.post("/mfa/webauthn", json={"name": "k", "credential": {}}, headers=headers),
        403,
        "reauth_required",
    )
    totp = await client.post("/mfa/totp", data={"csrf_token": csrf, "code": "123456"})
    assert totp.status_code == 303 and totp.headers["location"].startswith("/security?")
    for path, data in (
        ("/security/totp/remove", {}),
        ("/security/webauthn/remove", {"credential_id": str(key.id)}),
    ):
        removed = await client.post(path, data={"csrf_token": csrf} | data)
        assert removed.status_code == 303, path
        assert removed.headers["location"].startswith("/security?"), path
    left = await web_rig.db.run(factors, admin.id)
    assert left.totp and len(left.credentials) == 1


async def test_a_password_only_session_ends_when_its_user_enrols_elsewhere(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "twice")
    b = another(web_rig, 1)
    assert (await post_login(b, "twice", one_time)).headers["location"] == "/password"
    page = await b.get("/password")
    changed = await b.post(
        "/password",
        data={"csrf_token": form_token(page.text), "current_password": one_time,
              "new_password": STRONG},
    )  # fmt: skip
    assert changed.status_code == 303
    setup = await b.get("/mfa/setup")
    b_csrf = re.search(r'name="csrf-token" content="([^"]+)"', setup.text)
    assert b_csrf is not None
    a = another(web_rig, 2)
    await post_login(a, "twice", STRONG)
    await enrol_totp(a, "twice")
    headers = {"x-csrf-token": b_csrf[1]}
    assert (await b.get("/mfa/setup")).headers["location"].startswith("/login")
    options = await b.post("/mfa/webauthn/options", json={}, headers=headers)
    assert options.status_code == 303 and options.headers["location"].startswith("/login")
    changed = await b.post(
        "/api/v1/profile/password",
        json={"current_password": STRONG, "new_password": STRONG + " x"},
        headers=headers,
    )
    assert changed.status_code == 401
    assert (await a.get("/api/v1/hosts")).status_code == 200


async def test_a_second_password_only_session_is_deleted_by_the_first_enrolment(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "pair")
    user = await web_rig.db.run(get_user, "pair")
    assert user is not None
    b = another(web_rig, 3)
    await post_login(b, "pair", one_time)
    page = await b.get("/password")
    await b.post(
        "/password",
        data={"csrf_token": form_token(page.text), "current_password": one_time,
              "new_password": STRONG},
    )  # fmt: skip
    a = another(web_rig, 4)
    await post_login(a, "pair", STRONG)
    await enrol_totp(a, "pair")
    rows = await web_rig.db.run(
        lambda c: c.execute(
            "SELECT count(*) FROM sessions WHERE user_id = %s AND mfa_at IS NULL", (user.id,)
        ).fetchone()
    )
    assert rows is not None and rows[0] == 0


async def test_two_concurrent_removals_leave_one_factor(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    admin = await web_rig.db.run(get_user, "admin")
    assert admin is not None
    key = await web_rig.db.run(add_credential, admin.id, b"\x01" * 16, b"\x02" * 32, 0, "k1")
    csrf = form_token((await client.get("/security")).text)
    answers: list[int] = []

    async def remove(path: str, data: dict[str, str]) -> None:
        answer = await client.post(path, data={"csrf_token": csrf} | data)
        answers.append(answer.status_code)

    for _ in range(3):  # the race needs both checks before either delete
        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove, "/security/totp/remove", {})
            nursery.start_soon(remove, "/security/webauthn/remove", {"credential_id": str(key.id)})
        left = await web_rig.db.run(factors, admin.id)
        assert left.any, answers
        if not left.totp:
            break
    assert sorted(answers[:2]) == [303, 409]


async def test_unlocking_a_user_needs_a_recent_second_factor(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await make_user(client, "locked")
    user = await web_rig.db.run(get_user, "locked")
    assert user is not None
    await stale(web_rig, client)
    assert_envelope(await client.post(f"/api/v1/users/{user.id}/unlock"), 403, "reauth_required")
    page = await client.get("/users")
    form = await client.post(f"/users/{user.id}/unlock", data={"csrf_token": form_token(page.text)})
    assert form.status_code == 303 and form.headers["location"].startswith("/security?")


async def audit_of(rig: WebRig, **kw: Any) -> list[Any]:
    page, _ = await rig.db.run(list_entries, AuditFilter(limit=1000, **kw))
    return list(page)


async def test_a_refused_security_key_login_is_audited(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    c = another(web_rig, 5)
    assert (await post_login(c, "admin", web_rig.password)).headers["location"] == "/login/mfa"
    assert (await c.post("/login/webauthn/options")).status_code == 200
    refused = await c.post("/login/webauthn", content=b"{}")
    assert refused.status_code == 401
    failed = await audit_of(web_rig, action="auth.login", outcome="failed", target="user:admin")
    assert any("security key" in e.detail for e in failed), failed


async def test_the_first_recovery_codes_are_audited(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "codes")
    c = another(web_rig, 6)
    await first_login(c, "codes", one_time)
    shown = await audit_of(web_rig, action="auth.mfa.recovery_codes", target="user:codes")
    assert len(shown) == 1


async def test_a_locked_account_is_refused_at_the_second_step(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    c = another(web_rig, 7)
    assert (await post_login(c, "admin", web_rig.password)).headers["location"] == "/login/mfa"
    await web_rig.db.run(
        lambda conn: conn.execute(
            "UPDATE users SET locked_until = now() + interval '1 hour' WHERE username = 'admin'"
        )
    )
    done = await c.post("/login/mfa", data={"code": totp_code(web_rig.totp)})
    assert done.headers["location"] == "/login" and SESSION_COOKIE not in c.cookies
