"""The access-JWT exchange (R-7.3): an API token → a 15-minute ES256 JWT with a kid plus a
rotating refresh token; the JWT works as Bearer while the owner's rights still apply; expiry,
wrong kid or signature refused; signing keys rotate with overlap; a refresh token is single use
and a reused one revokes its whole family. Time is an injected clock (no sleeps)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import ec

from storage import update_user
from web.authz import Principal
from web.jwt_keys import ACCESS_LIFETIME, OVERLAP, SIGN_FOR, InvalidJwt
from web.tokens import Tokens

from .conftest import WebRig
from .test_tokens import make_user, token_for, tokens_of

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
async def clock(web_rig: WebRig) -> Clock:
    tokens = tokens_of(web_rig)
    clock = Clock()
    tokens.clock = clock
    tokens.keys.clock = clock
    return clock


@pytest.fixture
async def http(web_rig: WebRig, clock: Clock) -> AsyncIterator[httpx2.AsyncClient]:
    async with LifespanManager(web_rig.app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def exchange(http: httpx2.AsyncClient, token: str) -> dict[str, Any]:
    answer = await http.post("/api/v1/auth/token", json={"grant_type": "api_token",
                                                         "token": token})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    return dict(answer.json())


async def refresh(http: httpx2.AsyncClient, token: str) -> httpx2.Response:
    return await http.post(
        "/api/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": token}
    )


async def hosts(http: httpx2.AsyncClient, access: str) -> httpx2.Response:
    return await http.get("/api/v1/hosts", headers={"authorization": f"Bearer {access}"})


async def test_exchanged_access_jwt_is_es256_with_kid_verifies_with_jwks_and_opens_the_api(
    web_rig: WebRig, http: httpx2.AsyncClient
) -> None:
    grant = await exchange(http, await token_for(web_rig, 1, "read"))
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 900
    assert grant["refresh_token"].startswith("pmr_") and grant["refresh_expires_in"] == 3600
    header = jwt.get_unverified_header(grant["access_token"])
    assert header["alg"] == "ES256"
    jwks = (await http.get("/api/v1/auth/jwks.json")).json()
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(grant["access_token"], public, algorithms=["ES256"],
                        audience="patch-manager-api", issuer="patch-manager")  # fmt: skip
    assert claims["scope"] == "read" and claims["sub"] == "1"
    assert claims["exp"] - claims["iat"] == 900
    assert (await hosts(http, grant["access_token"])).status_code == 200
    refused = await http.post(
        "/api/v1/hosts/refresh",
        json={"host_ids": [1]},
        headers={"authorization": f"Bearer {grant['access_token']}"},
    )
    assert refused.status_code == 403  # the read scope travels in the JWT's token


async def test_access_jwt_expires_after_fifteen_minutes(
    web_rig: WebRig, http: httpx2.AsyncClient, clock: Clock
) -> None:
    grant = await exchange(http, await token_for(web_rig, 1, "read"))
    clock.advance(ACCESS_LIFETIME - dt.timedelta(seconds=1))
    assert (await hosts(http, grant["access_token"])).status_code == 200
    clock.advance(dt.timedelta(seconds=1))
    refused = await hosts(http, grant["access_token"])
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "the access token has expired"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_access_jwt_with_an_unknown_kid_a_foreign_signature_or_another_alg_is_refused(
    web_rig: WebRig, http: httpx2.AsyncClient
) -> None:
    grant = await exchange(http, await token_for(web_rig, 1, "read"))
    good = grant["access_token"]
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": header["kid"]})
    unknown = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "nope"})
    hs256 = jwt.encode(claims, "secret" * 8, algorithm="HS256", headers={"kid": header["kid"]})
    head, body, signature = good.split(".")
    widened = _b64(json.dumps({**claims, "scope": "operate", "tid": claims["tid"]}).encode())
    tampered = ".".join([head, widened, signature])
    none = ".".join([_b64(json.dumps({"alg": "none", "kid": header["kid"]}).encode()), body, ""])
    for token, message in [
        (forged, "invalid token: Signature verification failed"),
        (unknown, "unknown or retired signing key"),
        (hs256, "only ES256 tokens with a kid are accepted"),
        (tampered, "invalid token: Signature verification failed"),
        (none, "only ES256 tokens with a kid are accepted"),
    ]:
        refused = await hosts(http, token)
        assert refused.status_code == 401, token
        assert refused.json()["error"]["message"] == message


async def test_old_signing_key_verifies_until_it_retires_after_rotation(
    web_rig: WebRig, http: httpx2.AsyncClient, clock: Clock
) -> None:
    token = await token_for(web_rig, 1, "read", days=5)
    old_kid = jwt.get_unverified_header((await exchange(http, token))["access_token"])["kid"]
    # signed by the old key one second before it stops signing
    clock.advance(SIGN_FOR - dt.timedelta(seconds=1))
    late = await exchange(http, token)
    assert jwt.get_unverified_header(late["access_token"])["kid"] == old_kid
    # then the next exchange makes a new key
    clock.advance(dt.timedelta(seconds=2))
    fresh = await exchange(http, token)
    new_kid = jwt.get_unverified_header(fresh["access_token"])["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in (await http.get("/api/v1/auth/jwks.json")).json()["keys"]}
    assert kids == {old_kid, new_kid}  # the overlap: both published
    # the late token still verifies until its own expiry, under the old key
    clock.advance(ACCESS_LIFETIME - dt.timedelta(seconds=5))
    assert (await hosts(http, late["access_token"])).status_code == 200
    assert (await hosts(http, fresh["access_token"])).status_code == 200
    # after the overlap the old key is retired: gone from the JWKS
    clock.advance(OVERLAP)
    kids = {k["kid"] for k in (await http.get("/api/v1/auth/jwks.json")).json()["keys"]}
    assert kids == {new_kid}
    # and a token naming it (even one whose own expiry had not passed) is refused
    tokens: Tokens = tokens_of(web_rig)
    claims = jwt.decode(late["access_token"], options={"verify_signature": False})
    assert claims["exp"] < clock.now.timestamp()
    with pytest.raises(InvalidJwt, match="unknown or retired signing key"):
        await tokens.keys.verify(late["access_token"])
    # the next rotation forgets retired keys
    await tokens.keys.rotate()
    stored = await web_rig.db.run(
        lambda c: [r[0] for r in c.execute("SELECT kid FROM jwt_signing_keys").fetchall()]
    )
    assert old_kid not in stored and new_kid in stored


async def test_refresh_token_rotates_on_use_and_a_reused_one_revokes_the_whole_family(
    web_rig: WebRig, http: httpx2.AsyncClient
) -> None:
    grant = await exchange(http, await token_for(web_rig, 1, "read"))
    first = await refresh(http, grant["refresh_token"])
    assert first.status_code == 200, first.text
    second = first.json()
    assert second["refresh_token"] != grant["refresh_token"]
    assert (await hosts(http, second["access_token"])).status_code == 200
    reused = await refresh(http, grant["refresh_token"])  # the used one, again: stolen
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "invalid_grant"
    # the family is gone: its newest refresh token and its access tokens too
    assert (await refresh(http, second["refresh_token"])).status_code == 401
    refused = await hosts(http, second["access_token"])
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert (await hosts(http, grant["access_token"])).status_code == 401


async def test_refresh_token_slides_one_hour_and_expires_unused(
    web_rig: WebRig, http: httpx2.AsyncClient, clock: Clock
) -> None:
    grant = await exchange(http, await token_for(web_rig, 1, "read"))
    clock.advance(dt.timedelta(minutes=50))
    slid = await refresh(http, grant["refresh_token"])
    assert slid.status_code == 200
    clock.advance(dt.timedelta(minutes=50))  # 100 minutes after the exchange: slid
    again = await refresh(http, slid.json()["refresh_token"])
    assert again.status_code == 200
    clock.advance(dt.timedelta(hours=1, seconds=1))
    expired = await refresh(http, again.json()["refresh_token"])
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "refresh token expired"


async def test_access_jwt_follows_the_owners_current_rights_and_token_revocation(
    web_rig: WebRig, http: httpx2.AsyncClient
) -> None:
    user_id = await make_user(web_rig, "jwtop", "operator", [])
    grant = await exchange(http, await token_for(web_rig, user_id, "operate"))
    auth = {"authorization": f"Bearer {grant['access_token']}"}
    preview = await http.post("/api/v1/deploy/preview", json={"host_ids": [1]}, headers=auth)
    assert preview.status_code != 403, preview.text
    await web_rig.db.run(lambda c: update_user(c, user_id, by="admin", role="auditor"))
    demoted = await http.post("/api/v1/deploy/preview", json={"host_ids": [1]}, headers=auth)
    assert demoted.status_code == 403
    owner = Principal("jwtop", user_id)
    (item,) = await tokens_of(web_rig).list(owner)
    await tokens_of(web_rig).revoke(owner, item.id)
    assert (await http.get("/api/v1/hosts", headers=auth)).status_code == 401
    assert (await refresh(http, grant["refresh_token"])).status_code == 401


async def test_exchange_refuses_bad_grants_with_one_line_errors(
    web_rig: WebRig, http: httpx2.AsyncClient
) -> None:
    for body, status in [
        ({"grant_type": "api_token", "token": "pm_unknown"}, 401),
        ({"grant_type": "api_token"}, 401),
        ({"grant_type": "refresh_token", "refresh_token": "pmr_unknown"}, 401),
        ({"grant_type": "password"}, 422),
        ({"grant_type": "api_token", "token": "x" * 201}, 422),
    ]:
        answer = await http.post("/api/v1/auth/token", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert "\n" not in answer.json()["error"]["message"]
