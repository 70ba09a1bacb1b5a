"""Review findings on API tokens, access JWTs and single sign-on (issue 12 points 2-3): a bearer
credential never stands in for a fresh second factor, dangerous SSO changes need one, a token
never outlives its owner's standing, and a session is not broken by someone else's Authorization
header."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx2
import pytest

from actors.rollout import MAX_ATTEMPTS
from storage import create_group
from storage.audit import AuditFilter, list_entries
from storage.reports import save_definition
from web.authz import Principal
from web.handle import InvalidInput

from ..conftest import fleet_addresses
from .conftest import WebRig, assert_envelope, form_token
from .test_mfa import stale_second_factor
from .test_tokens import bearer, make_user, owner, token_for, tokens_of

pytestmark = pytest.mark.timeout(120)


async def two_hosts(client: httpx2.AsyncClient) -> list[int]:
    base = fleet_addresses(2).rsplit(".", 1)[0]
    ids = []
    for last in (1, 2):
        made = await client.post("/api/v1/hosts", json={"name": f"{base}.{last}"})
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return ids


async def test_a_stale_session_cannot_create_a_token_through_the_api_or_the_page(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    page = await client.get("/tokens")
    await stale_second_factor(web_rig, client)
    api = await client.post("/api/v1/tokens", json={"name": "x", "scope": "operate"})
    assert_envelope(api, 403, "reauth_required")
    form = await client.post(
        "/tokens",
        data={"csrf_token": form_token(page.text), "name": "x", "scope": "operate",
              "expires_days": "7"},
        headers={"referer": "http://testserver/tokens"},
    )  # fmt: skip
    assert form.status_code == 303 and form.headers["location"].startswith("/security?next=")
    assert (await client.get("/api/v1/tokens")).json()["tokens"] == []


async def test_a_token_reboots_now_no_more_hosts_than_the_limit_and_retries_no_more(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    web_rig.auth.settings = dataclasses.replace(web_rig.auth.settings, reauth_reboot_hosts=1)
    ids = await two_hosts(client)
    job = {"kind": "reboot", "schedule": "now", "host_ids": ids}
    secret = await token_for(web_rig, 1, "operate")
    async with bearer(web_rig.app, secret) as http:
        assert_envelope(await http.post("/api/v1/jobs", json=job), 403, "reauth_required")
        one = await http.post("/api/v1/jobs", json=job | {"host_ids": ids[:1]})
        assert one.status_code == 201, one.text  # within the limit
    # a reboot-now job of both hosts that failed on both (made as a window job, which no runner
    # touches without a window, then turned into that in the database: no race with a runner)
    made = await client.post("/api/v1/jobs", json=job | {"schedule": "window"})
    assert made.status_code == 201, made.text
    job_id = made.json()["job_id"]

    def failed_now(c: Any) -> None:
        c.execute("UPDATE jobs SET schedule = 'now' WHERE id = %s", (job_id,))
        # both tries spent: the coordinator's automatic retry (rollout.MAX_ATTEMPTS) leaves them
        c.execute(
            "UPDATE job_hosts SET state = 'failed', attempts = %s WHERE job_id = %s",
            (MAX_ATTEMPTS, job_id),
        )

    await web_rig.db.run(failed_now)
    async with bearer(web_rig.app, secret) as http:
        retried = await http.post(f"/api/v1/jobs/{job_id}/retry")
        assert_envelope(retried, 403, "reauth_required")
    await stale_second_factor(web_rig, client)
    assert_envelope(await client.post(f"/api/v1/jobs/{job_id}/retry"), 403, "reauth_required")


async def test_sso_settings_mappings_and_identity_links_need_a_recent_second_factor(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    page = await client.get("/settings/sso")
    csrf = form_token(page.text)
    await stale_second_factor(web_rig, client)
    forms = {
        "/settings/sso/save": {"enabled": "on", "preset": "oidc", "client_id": "c",
                               "discovery_url": "https://127.0.0.1:9/x", "groups_claim": "g"},
        "/settings/sso/mappings": {"claim_value": "evil", "role": "admin"},
        "/settings/sso/mappings/delete": {"claim_value": "evil"},
        "/settings/sso/identities": {"user_id": "1", "issuer": "https://127.0.0.1:9",
                                     "subject": "me"},
        "/settings/sso/identities/delete": {"identity_id": "1"},
    }  # fmt: skip
    for path, data in forms.items():
        refused = await client.post(
            path, data={"csrf_token": csrf, **data},
            headers={"referer": "http://testserver/settings/sso"},
        )  # fmt: skip
        assert refused.status_code == 303, (path, refused.text)
        assert refused.headers["location"].startswith("/security?next="), path
    link = {"issuer": "https://127.0.0.1:9", "subject": "me"}
    api = await client.post("/api/v1/users/1/sso-identities", json=link)
    assert_envelope(api, 403, "reauth_required")
    unlink = await client.post("/api/v1/users/1/sso-identities/unlink", json=link)
    assert_envelope(unlink, 403, "reauth_required")


async def test_a_token_never_lists_or_ends_sessions_not_even_its_owners_own(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    mine = (await client.get("/api/v1/users/1/sessions")).json()["sessions"]
    assert mine
    for scope in ("read", "operate"):
        secret = await token_for(web_rig, 1, scope)
        async with bearer(web_rig.app, secret) as http:
            listed = await http.get("/api/v1/users/1/sessions")
            assert listed.status_code == 403, (scope, listed.text)
            for gone in (
                await http.delete(f"/api/v1/users/1/sessions/{mine[0]['id']}"),
                await http.delete("/api/v1/users/1/sessions"),
            ):
                assert gone.status_code == 403, (scope, gone.text)
    assert (await client.get("/api/v1/hosts")).status_code == 200  # the session lives on


async def test_a_session_works_beside_an_authorization_header_of_another_scheme(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    basic = {"authorization": "Basic dXNlcjpwYXNz"}  # e.g. added by a reverse proxy
    assert (await client.get("/api/v1/hosts", headers=basic)).status_code == 200
    assert (await client.get("/hosts", headers=basic)).status_code == 200
    empty = await client.get("/api/v1/hosts", headers={"authorization": "Bearer"})
    assert_envelope(empty, 401, "invalid_token")  # a Bearer header without a token is refused


async def grant_of(app: Any, secret: str) -> dict[str, Any]:
    async with bearer(app, secret) as http:
        http.headers.pop("authorization")
        grant = await http.post(
            "/api/v1/auth/token", json={"grant_type": "api_token", "token": secret}
        )
    assert grant.status_code == 200, grant.text
    return dict(grant.json())


async def refreshes(app: Any, grant: dict[str, Any]) -> int:
    async with bearer(app, grant["access_token"]) as http:
        if (await http.get("/api/v1/hosts")).status_code != 200:
            return 401
        http.headers.pop("authorization")
        again = await http.post(
            "/api/v1/auth/token",
            json={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        )
    return again.status_code


async def test_a_password_change_ends_refresh_families_and_admin_resets_revoke_tokens(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    mine = await token_for(web_rig, 1, "read")
    grant = await grant_of(web_rig.app, mine)
    changed = await client.post(
        "/api/v1/profile/password",
        json={"current_password": web_rig.password,
              "new_password": "a-brand-new-passphrase-for-the-boss-7"},
    )  # fmt: skip
    assert changed.status_code in (200, 204), changed.text
    assert await refreshes(web_rig.app, grant) == 401  # the family ended with the password
    async with bearer(web_rig.app, mine) as http:  # the API token itself stays (own change)
        assert (await http.get("/api/v1/hosts")).status_code == 200
    for reset in ("reset-password", "reset-mfa"):
        user_id = await make_user(web_rig, f"op-{reset}", "operator", [])
        theirs = await token_for(web_rig, user_id, "read")
        done = await client.post(f"/api/v1/users/{user_id}/{reset}")
        assert done.status_code == 200, done.text
        async with bearer(web_rig.app, theirs) as http:
            assert_envelope(await http.get("/api/v1/hosts"), 401, "invalid_token")
        [entry], _ = await web_rig.db.run(
            list_entries, AuditFilter(target=f"user:op-{reset}", action="user.")
        )
        assert entry.after["tokens_revoked"] == 1, entry


async def test_token_names_over_100_characters_or_with_control_characters_are_refused(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    row = await owner(web_rig, 1)
    me = Principal.of(row, operators_see_ungrouped=False)
    for name in ("x" * 101, "a\x01b", "tab\tname"):
        with pytest.raises(InvalidInput) as refused:  # the one rule of the API and the CLI
            await tokens_of(web_rig).create(
                me, owner=row, name=name, scope="read", days=7, group_ids=None
            )
        assert "name" in refused.value.fields, name
    api = await client.post("/api/v1/tokens", json={"name": "a\u001bb", "scope": "read"})
    assert_envelope(api, 422, "validation_error")
    assert (await client.get("/api/v1/tokens")).json()["tokens"] == []


async def test_a_token_without_expires_days_gets_90_days_or_the_configured_maximum(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    tokens_of(web_rig).max_days = 30
    made = await client.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
    assert made.status_code == 201, made.text
    expires = dt.datetime.fromisoformat(made.json()["item"]["expires_at"])
    assert expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    tokens_of(web_rig).max_days = 365
    made = await client.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
    expires = dt.datetime.fromisoformat(made.json()["item"]["expires_at"])
    assert dt.timedelta(days=89) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=90)


async def test_a_group_restricted_admin_token_lists_only_its_owners_report_definitions(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    group = await web_rig.db.run(create_group, "web")
    for name, by in (("mine", "admin"), ("theirs", "someone-else")):
        await web_rig.db.run(save_definition, name, "compliance", "json", {}, [], "0 6 * * 1", by)
    restricted = await token_for(web_rig, 1, "read", groups=[group.id])
    async with bearer(web_rig.app, restricted) as http:
        listed = await http.get("/api/v1/report-definitions")
        assert listed.status_code == 200, listed.text
        assert [d["name"] for d in listed.json()["definitions"]] == ["mine"]
    everything = await token_for(web_rig, 1, "read")
    async with bearer(web_rig.app, everything) as http:
        listed = await http.get("/api/v1/report-definitions")
        assert sorted(d["name"] for d in listed.json()["definitions"]) == ["mine", "theirs"]


async def test_a_window_reboot_job_of_hosts_whose_window_is_open_now_needs_reauth_like_now(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    web_rig.auth.settings = dataclasses.replace(web_rig.auth.settings, reauth_reboot_hosts=1)
    ids = await two_hosts(client)
    now = dt.datetime.now(dt.UTC)
    for host_id in ids:  # a daily window that opened an hour ago and lasts three hours
        window = {"name": f"open-{host_id}", "recurrence": "daily", "timezone": "UTC",
                  "start_date": (now - dt.timedelta(days=2)).date().isoformat(),
                  "start_time": (now - dt.timedelta(hours=1)).strftime("%H:%M"),
                  "duration_minutes": 180, "host_id": host_id}  # fmt: skip
        made = await client.post("/api/v1/windows", json=window)
        assert made.status_code == 201, made.text
    job = {"kind": "reboot", "schedule": "window", "host_ids": ids}
    secret = await token_for(web_rig, 1, "operate")
    async with bearer(web_rig.app, secret) as http:
        assert_envelope(await http.post("/api/v1/jobs", json=job), 403, "reauth_required")
        one = await http.post("/api/v1/jobs", json=job | {"host_ids": ids[:1]})
        assert one.status_code == 201, one.text  # within the limit
