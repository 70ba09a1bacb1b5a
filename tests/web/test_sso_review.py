"""Review findings on single sign-on (issue 12 point 3): an SSO user's API tokens and refresh
families do not outlive the provider's decision, nor single sign-on being turned off."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import trio
from joserfc import jwt
from joserfc.jwk import RSAKey

from storage import list_users
from storage.audit import AuditFilter, list_entries
from web.sso import KEYS_TTL, OidcClient, ProviderMetadata, SsoError

from .conftest import WebRig, assert_envelope
from .sso_provider import CLIENT_ID, CLIENT_SECRET, Provider
from .test_sso import browser, client, configure, provider, sign_in, sso_app, user_named
from .test_tokens import bearer, token_for

__all__ = ["client", "provider", "sso_app"]  # fixtures of test_sso, used here

pytestmark = pytest.mark.timeout(120)


async def signed_in_user_with_token(
    rig: WebRig, admin: httpx2.AsyncClient, provider: Provider
) -> tuple[int, str, dict[str, str]]:
    """carol signs in through the provider (operator); her operate token and its JWT grant."""
    await configure(admin, provider, {"pm-operators": ("operator", [])})
    async with browser(rig) as carol:
        assert (await sign_in(carol)).status_code == 200
    user = await user_named(rig.db, "carol.example.com")
    secret = await token_for(rig, user.id, "operate")
    async with bearer(rig.app, "") as http:
        http.headers.pop("authorization")
        grant = await http.post(
            "/api/v1/auth/token", json={"grant_type": "api_token", "token": secret}
        )
        assert grant.status_code == 200, grant.text
    async with bearer(rig.app, secret) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200
    return int(user.id), secret, grant.json()


async def test_an_unmapped_sign_in_revokes_the_sso_users_tokens_and_refresh_families(
    sso_app: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    _, secret, grant = await signed_in_user_with_token(sso_app, client, provider)
    provider.user["groups"] = []  # removed from the provider's group
    async with browser(sso_app) as carol:
        assert (await sign_in(carol)).status_code == 403
    async with bearer(sso_app.app, secret) as http:
        assert_envelope(await http.get("/api/v1/hosts"), 401, "invalid_token")
    async with bearer(sso_app.app, grant["access_token"]) as http:
        assert_envelope(await http.get("/api/v1/hosts"), 401, "invalid_token")
        http.headers.pop("authorization")
        refreshed = await http.post(
            "/api/v1/auth/token",
            json={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        )
        assert refreshed.status_code == 401, refreshed.text
    [entry], _ = await sso_app.db.run(list_entries, AuditFilter(action="sso.unmapped"))
    assert entry.target == "user:carol.example.com"
    assert entry.after["tokens_revoked"] == 1


async def test_tokens_of_sso_only_users_are_refused_while_single_sign_on_is_off(
    sso_app: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    _, secret, _ = await signed_in_user_with_token(sso_app, client, provider)
    local = await token_for(sso_app, 1, "read")  # the local admin's
    off = await client.post(
        "/settings/sso/save",
        data={"preset": "oidc", "discovery_url": provider.discovery_url, "client_id": CLIENT_ID,
              "client_secret": CLIENT_SECRET, "groups_claim": "groups"},
    )  # fmt: skip
    assert off.status_code == 303, off.text
    async with bearer(sso_app.app, secret) as http:
        refused = assert_envelope(await http.get("/api/v1/hosts"), 401, "invalid_token")
        assert "single sign-on" in refused["message"]
    async with bearer(sso_app.app, local) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200


async def test_two_simultaneous_first_sign_ins_of_one_identity_make_one_user(
    sso_app: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    async with browser(sso_app) as a, browser(sso_app) as b:
        backs = []
        for who in (a, b):
            start = await who.get("/sso/login")
            async with httpx2.AsyncClient() as idp:
                back = await idp.get(start.headers["location"])
            backs.append((who, back.headers["location"]))
        results: list[int] = []

        async def finish(who: httpx2.AsyncClient, url: str) -> None:
            results.append((await who.get(url)).status_code)

        async with trio.open_nursery() as nursery:
            for who, url in backs:
                nursery.start_soon(finish, who, url)
    assert results == [200, 200]
    users = await sso_app.db.run(list_users)
    assert [u.username for u in users if u.username.startswith("carol")] == ["carol.example.com"]


def test_a_discovery_document_naming_another_issuer_is_refused() -> None:
    url = "https://idp.example.com/tenant-a/.well-known/openid-configuration"
    document = {
        "authorization_endpoint": "https://idp.example.com/authorize",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
    }
    assert ProviderMetadata.parse(document | {"issuer": "https://idp.example.com/tenant-a"}, url)
    for other in ("https://idp.example.com/tenant-b", "https://evil.example.com/tenant-a"):
        with pytest.raises(SsoError, match="issuer"):
            ProviderMetadata.parse(document | {"issuer": other}, url)


async def test_provider_keys_are_fetched_again_once_a_day(provider: Provider) -> None:
    now = [1_000_000.0]
    oidc = OidcClient(clock=lambda: now[0])
    jwks_uri = f"{provider.base}/jwks"
    first = await oidc.keys(jwks_uri)
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "k2"})  # rotated
    now[0] += 3600
    assert (await oidc.keys(jwks_uri)).as_dict() == first.as_dict()  # cached within the day
    now[0] += KEYS_TTL
    again = await oidc.keys(jwks_uri)
    assert [k.kid for k in again.keys] == ["k2"]


async def test_an_id_token_signed_with_hs256_using_the_providers_public_key_is_refused(
    provider: Provider,
) -> None:
    meta = ProviderMetadata(provider.issuer, f"{provider.base}/authorize",
                            f"{provider.base}/token", f"{provider.base}/jwks")  # fmt: skip
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
              "nonce": "n-1", "sub": "subject-1"}  # fmt: skip
    oidc = OidcClient()
    genuine = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, provider.key)
    assert (await oidc.validate_id_token(genuine, meta, CLIENT_ID, "n-1"))["sub"] == "subject-1"

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    public = provider.key.as_pem(private=False)  # what an attacker can fetch from the JWKS
    signed = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode()) + "."
    signed += b64(json.dumps(claims).encode())
    forged = signed + "." + b64(hmac.new(public, signed.encode(), hashlib.sha256).digest())
    with pytest.raises(SsoError):
        await oidc.validate_id_token(forged, meta, CLIENT_ID, "n-1")


async def test_a_sign_in_asks_for_a_recent_authentication_and_refuses_an_old_one(
    sso_app: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    provider.user["auth_time"] = int(time.time()) - 3600  # the provider's own session is old
    async with browser(sso_app) as carol:
        refused = await sign_in(carol)
        assert refused.status_code == 403, refused.text
        assert "authenticat" in refused.text and "pm_session" not in carol.cookies
    assert provider.authorize_requests[-1]["max_age"] == "300"
    provider.user["auth_time"] = int(time.time()) - 30  # signed in at the provider just now
    async with browser(sso_app) as carol:
        assert (await sign_in(carol)).status_code == 200


async def test_the_redirect_uri_is_the_configured_public_origin_not_the_host_header(
    sso_app: WebRig, client: httpx2.AsyncClient, provider: Provider
) -> None:
    await configure(client, provider, {"pm-operators": ("operator", [])})
    sso_app.auth.settings = dataclasses.replace(
        sso_app.auth.settings, webauthn_origin="https://pm.example.com"
    )
    async with browser(sso_app) as carol:
        start = await carol.get("/sso/login", headers={"host": "attacker.example.net"})
    assert start.status_code == 303, start.text
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["redirect_uri"] == ["https://pm.example.com/sso/callback"]
    page = await client.get("/settings/sso")
    assert "https://pm.example.com/sso/callback" in page.text
