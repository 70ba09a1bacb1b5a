"""OIDC single sign-on against a real provider on 127.0.0.1 (tests.web.sso_provider): the code
flow with PKCE, state and nonce; id_tokens refused for each way they can be wrong; claims mapped
to roles and groups at every sign-in; no linking by e-mail; the admin's settings page."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import trio
from asgi_lifespan import LifespanManager
from joserfc.jwk import RSAKey

from ca import Sealer
from storage import Database, create_group, create_user, get_user
from storage.audit import AuditFilter, list_entries
from storage.sso import identities_of, load_sso_config

from .conftest import WebRig, assert_envelope, login
from .sso_provider import CLIENT_ID, CLIENT_SECRET, Provider, start_provider

pytestmark = pytest.mark.timeout(120)

SEALER = Sealer(os.urandom(32))
LOCAL_PASSWORD = "a-local-password-for-alice-1"


@pytest.fixture
async def sso_app(web_rig: WebRig) -> AsyncIterator[WebRig]:
    """The rig with an application that has a sealing key (the secret is stored sealed)."""
    from web import create_app

    web_rig.app = create_app(
        web_rig.app.state.relay.handle, web_rig.db, auth=web_rig.auth, sealer=SEALER
    )
    async with LifespanManager(web_rig.app):
        yield web_rig


@pytest.fixture
async def client(sso_app: WebRig) -> AsyncIterator[httpx2.AsyncClient]:
    """The admin, logged in with password and second factor (this module's own app)."""
    async with browser(sso_app) as admin:
        admin.headers["x-csrf-token"] = await login(admin, sso_app.password)
        yield admin


@pytest.fixture
async def provider(nursery: trio.Nursery) -> Provider:
    found = await start_provider(nursery)
    found.user = {
        "sub": "subject-1",
        "preferred_username": "carol@example.com",
        "email": "carol@example.com",
        "groups": ["pm-operators"],
    }
    return found


async def configure(
    client: httpx2.AsyncClient, provider: Provider, mappings: dict[str, tuple[str, list[int]]]
) -> None:
    saved = await client.post(
        "/settings/sso/save",
        data={
            "enabled": "on",
            "preset": "oidc",
            "discovery_url": provider.discovery_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "groups_claim": "groups",
            "display_name": "Test IdP",
        },
    )
    assert saved.status_code == 303, saved.text
    for value, (role, groups) in mappings.items():
        mapped = await client.post(
            "/settings/sso/mappings",
            data={"claim_value": value, "role": role, "group_id": [str(g) for g in groups]},
        )
        assert mapped.status_code == 303, mapped.text


def browser(rig: WebRig) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=rig.app), base_url="http://testserver"
    )


async def sign_in(who: httpx2.AsyncClient, next_path: str = "/") -> httpx2.Response:
    """The browser's part: our redirect, the provider's, our callback."""
    start = await who.get("/sso/login", params={"next": next_path})
    assert start.status_code == 303, start.text
    async with httpx2.AsyncClient() as idp:
        back = await idp.get(start.headers["location"])
    assert back.status_code == 302, back.text
    assert back.headers["location"].startswith("http://testserver/sso/callback?")
    return await who.get(back.headers["location"])


async def user_named(db: Database, name: str) -> Any:
    return await db.run(get_user, name)


async def test_sign_in_creates_the_mapped_user_and_reaches_the_page_asked_for(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    group = await web_rig.db.run(create_group, "web")
    await configure(client, provider, {"pm-operators": ("operator", [group.id])})
    async with browser(web_rig) as carol:
        done = await sign_in(carol, "/hosts")
        assert done.status_code == 200, done.text
        assert 'http-equiv="refresh" content="0;url=/hosts"' in done.text
        hosts = await carol.get("/hosts")
        assert hosts.status_code == 200
        assert "carol.example.com" in hosts.text  # the user name, in the header
    user = await user_named(web_rig.db, "carol.example.com")
    assert (user.role, user.group_ids) == ("operator", (group.id,))
    assert user.password_hash == "!sso"  # no local password
    request = provider.authorize_requests[0]
    assert request["code_challenge_method"] == "S256" and request["nonce"] and request["state"]
    assert len(provider.token_requests[0]["code_verifier"]) >= 43
    [identity] = await web_rig.db.run(identities_of, user.id)
    assert (identity.issuer, identity.subject) == (provider.issuer, "subject-1")


async def test_callback_is_usable_once_and_only_by_the_browser_that_started(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    async with browser(web_rig) as first:
        start = await first.get("/sso/login")
        async with httpx2.AsyncClient() as idp:
            back = (await idp.get(start.headers["location"])).headers["location"]
        async with browser(web_rig) as other:  # a callback link sent to another browser
            stolen = await other.get(back)
            assert stolen.status_code == 400
            assert "started in another browser" in stolen.text
        forged = await first.get(back.replace("state=", "state=x"))
        assert forged.status_code == 400 and "state does not match" in forged.text
        again = await first.get(back)  # the login in progress was consumed by the forgery
        assert again.status_code == 400
        assert (await first.get("/")).status_code == 303
    assert await user_named(web_rig.db, "carol.example.com") is None


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("nonce", "nonce does not belong to this sign-in"),
        ("aud", "meant for another application"),
        ("iss", "issued by &#39;https://evil.example.com&#39;"),
        ("expired", "the id_token expired at"),
        ("none", "unsigned (alg none)"),
        ("wrong_key", "signature does not verify"),
    ],
)
async def test_a_wrong_id_token_is_refused_and_starts_no_session(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider, tamper: str, message: str
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    provider.tamper = tamper
    async with browser(web_rig) as carol:
        done = await sign_in(carol)
        assert done.status_code == 403, done.text
        assert message in done.text
        assert "pm_session" not in carol.cookies
        assert (await carol.get("/")).status_code == 303  # to the login page
    assert await user_named(web_rig.db, "carol.example.com") is None


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["pm-admins"], "admin"),
        (["pm-operators"], "operator"),
        (["pm-operators", "pm-admins", "unrelated"], "admin"),
        (["pm-auditors"], "auditor"),
    ],
)
async def test_group_claim_values_map_to_the_strongest_role(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider, groups: list[str], role: str
) -> None:
    await configure(
        client,
        provider,
        {
            "pm-admins": ("admin", []),
            "pm-operators": ("operator", []),
            "pm-auditors": ("auditor", []),
        },
    )
    provider.user["groups"] = groups
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 200
    assert (await user_named(web_rig.db, "carol.example.com")).role == role


async def test_unmapped_user_is_refused_with_a_clear_page(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-admins": ("admin", [])})
    provider.user["groups"] = ["sales"]
    async with browser(web_rig) as carol:
        done = await sign_in(carol)
        assert done.status_code == 403
        assert "not given a role here" in done.text and "ask an administrator" in done.text
        assert (await carol.get("/")).status_code == 303
    assert await user_named(web_rig.db, "carol.example.com") is None
    [refusal], _ = await web_rig.db.run(
        list_entries, AuditFilter(action="sso.login", outcome="failed")
    )
    assert refusal.target == f"sso:{provider.issuer} subject-1"  # who was refused


async def test_role_and_groups_follow_the_claims_at_every_sign_in(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    ops = await web_rig.db.run(create_group, "ops")
    await configure(
        client, provider, {"pm-admins": ("admin", []), "pm-operators": ("operator", [ops.id])}
    )
    provider.user["groups"] = ["pm-admins"]
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 200
        assert (await user_named(web_rig.db, "carol.example.com")).role == "admin"
        provider.user["groups"] = ["pm-operators"]
        assert (await sign_in(carol)).status_code == 200
        user = await user_named(web_rig.db, "carol.example.com")
        assert (user.role, user.group_ids) == ("operator", (ops.id,))
        provider.user["groups"] = []
        refused = await sign_in(carol)
        assert refused.status_code == 403
        assert (await carol.get("/")).status_code == 303  # the earlier session ended


async def test_no_silent_linking_by_email_only_an_admin_links_an_account(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    alice = await web_rig.db.run(
        lambda c: create_user(c, "alice", "$argon2id$not-a-real-hash", "auditor")
    )
    provider.user = {
        "sub": "alice-at-idp",
        "preferred_username": "alice",
        "email": "alice@example.com",
        "groups": ["pm-admins"],
    }
    await configure(client, provider, {"pm-admins": ("admin", [])})
    async with browser(web_rig) as someone:
        assert (await sign_in(someone)).status_code == 200
    # A new account beside the local one: the same name or e-mail address is not proof.
    assert (await user_named(web_rig.db, "alice")).role == "auditor"
    assert await web_rig.db.run(identities_of, alice.id) == []
    twin = await user_named(web_rig.db, "alice-2")
    assert twin is not None and twin.role == "admin"
    # The admin links the identity to the local account, after unlinking it from the twin.
    [identity] = await web_rig.db.run(identities_of, twin.id)
    taken = await client.post(
        "/settings/sso/identities",
        data={"user_id": str(alice.id), "issuer": provider.issuer, "subject": "alice-at-idp"},
    )
    assert taken.status_code == 409 and "already linked to alice-2" in taken.text
    unlinked = await client.post(
        "/settings/sso/identities/delete",
        data={"user_id": str(twin.id), "identity_id": str(identity.id)},
    )
    assert unlinked.status_code == 303
    linked = await client.post(
        "/settings/sso/identities",
        data={"user_id": str(alice.id), "issuer": provider.issuer, "subject": "alice-at-idp"},
    )
    assert linked.status_code == 303, linked.text
    async with browser(web_rig) as someone:
        assert (await sign_in(someone)).status_code == 200
        assert "alice</a>" in (await someone.get("/")).text
    assert (await user_named(web_rig.db, "alice")).role == "admin"  # from the claims now


async def test_local_admin_password_login_still_works_with_sso_enabled(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    async with browser(web_rig) as admin:
        page = await admin.get("/login")
        assert 'id="sso-button"' in page.text and "Sign in with Test IdP" in page.text
        await login(admin, web_rig.password)
        assert (await admin.get("/users")).status_code == 200


async def test_login_page_has_no_sso_button_while_disabled(sso_app: WebRig) -> None:
    web_rig = sso_app
    async with browser(web_rig) as anyone:
        page = await anyone.get("/login")
        assert page.status_code == 200 and "sso-button" not in page.text
        start = await anyone.get("/sso/login")
        assert (start.status_code, start.headers["location"]) == (303, "/login")


async def test_client_secret_is_stored_sealed(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {})
    config = await web_rig.db.run(load_sso_config)
    assert CLIENT_SECRET not in config.client_secret_sealed
    assert SEALER.unseal(config.client_secret_sealed) == CLIENT_SECRET
    page = await client.get("/settings/sso")
    assert CLIENT_SECRET not in page.text and config.client_secret_sealed not in page.text


async def test_test_configuration_reports_each_check(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {})
    page = await client.post("/settings/sso/test")
    assert page.status_code == 200
    for check in ("client id", "client secret", "discovery document", "issuer", "signing keys"):
        assert f'data-check="{check}"><td>{check}</td><td class="ok">ok' in page.text, check
    assert "1 public key(s)" in page.text
    # Nothing listens there: the discovery check fails and says why.
    saved = await client.post(
        "/settings/sso/save",
        data={
            "preset": "oidc",
            "discovery_url": "http://127.0.0.1:9/.well-known/openid-configuration",
            "client_id": CLIENT_ID,
            "groups_claim": "groups",
        },
    )
    assert saved.status_code == 303
    page = await client.post("/settings/sso/test")
    assert 'data-check="discovery document"><td>discovery document</td><td class="error">' in (
        page.text
    )
    assert "cannot fetch the discovery document" in page.text


async def test_settings_refuse_unusable_values_beside_the_fields(
    client: httpx2.AsyncClient,
) -> None:
    page = await client.post(
        "/settings/sso/save",
        data={
            "enabled": "on",
            "preset": "oidc",
            "discovery_url": "http://idp.example.com/.well-known",
            "client_id": "",
            "groups_claim": "",
        },
    )
    assert page.status_code == 422
    assert "must be https" in page.text
    assert "the application (client) id is needed" in page.text
    assert "name the claim" in page.text
    entra = await client.post(
        "/settings/sso/save",
        data={"preset": "entra", "tenant_id": "not a tenant/../x", "groups_claim": "groups"},
    )
    assert entra.status_code == 422 and "tenant" in entra.text
    common = await client.post(
        "/settings/sso/save",
        data={"preset": "entra", "tenant_id": "common", "groups_claim": "groups"},
    )
    assert common.status_code == 422 and "use your directory&#39;s own tenant id" in common.text
    entra_ok = await client.post(
        "/settings/sso/save",
        data={"preset": "entra", "tenant_id": "contoso.onmicrosoft.com", "groups_claim": "roles"},
    )
    assert entra_ok.status_code == 303


async def test_identity_api_links_lists_and_unlinks_explicitly(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    bob = await web_rig.db.run(lambda c: create_user(c, "bob", "$argon2id$x", "operator"))
    url = f"/api/v1/users/{bob.id}/sso-identities"
    wanted = {"issuer": "https://login.example.com/t/v2.0", "subject": "bob-oid"}
    linked = await client.post(url, json=wanted)
    assert linked.status_code == 201, linked.text
    assert linked.json()["identity"]["username"] == "bob"
    listed = (await client.get(url)).json()["identities"]
    assert [(i["issuer"], i["subject"]) for i in listed] == [(wanted["issuer"], "bob-oid")]
    again = await client.post("/api/v1/users/1/sso-identities", json=wanted)
    assert_envelope(again, 409, "conflict")
    assert_envelope(await client.post(url, json={"issuer": "", "subject": "x"}), 422)
    assert_envelope(await client.get("/api/v1/users/987654/sso-identities"), 404, "not_found")
    gone = await client.post(url + "/unlink", json=wanted)
    assert gone.status_code == 200 and gone.json() == {"unlinked": True}
    assert (await client.get(url)).json()["identities"] == []
    assert (await client.post(url + "/unlink", json=wanted)).json() == {"unlinked": False}


async def test_provider_key_rotation_is_followed_by_fetching_the_keys_again(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 200  # the keys are cached now
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "k2"})  # rotated
    async with browser(web_rig) as carol:
        done = await sign_in(carol)
        assert done.status_code == 200, done.text


async def test_sign_ins_and_changes_are_audited(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 200
    provider.tamper = "nonce"
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 403
    entries, _ = await web_rig.db.run(list_entries, AuditFilter(action="sso.", limit=20))
    seen = [(e.action, e.actor, e.outcome) for e in reversed(entries)]
    assert seen == [
        ("sso.config.update", "user:admin", "ok"),
        ("sso.mapping.save", "user:admin", "ok"),
        ("sso.login", "user:carol.example.com", "ok"),
        ("sso.login", "anonymous", "failed"),
    ]
    assert "nonce" in entries[0].detail
    config_entry = entries[-1]
    assert CLIENT_SECRET not in str(config_entry.after)
    assert config_entry.after["client_secret"] == "replaced"


async def test_control_characters_are_refused_not_a_server_error(
    web_rig: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    page = await client.post(
        "/settings/sso/save",
        data={"preset": "oidc", "display_name": "a\x00b", "groups_claim": "groups"},
    )
    assert page.status_code == 422 and "no control characters" in page.text
    mapping = await client.post(
        "/settings/sso/mappings", data={"claim_value": "x\x00", "role": "admin"}
    )
    assert mapping.status_code == 422
    gone = await client.post("/settings/sso/mappings/delete", data={"claim_value": "x\x00"})
    assert gone.status_code == 303
    url = "/api/v1/users/1/sso-identities"
    assert_envelope(await client.post(url, json={"issuer": "i", "subject": "s\x00"}), 422)
    assert_envelope(
        await client.post(url + "/unlink", json={"issuer": "i\x00", "subject": "s"}), 422
    )
    await configure(client, provider, {"pm-operators": ("operator", [])})
    provider.user["email"] = "carol\x00@example.com"  # left out, the sign-in goes on
    async with browser(web_rig) as carol:
        assert (await sign_in(carol)).status_code == 200
    provider.user["sub"] = "bad\x00subject"
    async with browser(web_rig) as carol:
        refused = await sign_in(carol)
        assert refused.status_code == 403 and "subject is not usable" in refused.text
