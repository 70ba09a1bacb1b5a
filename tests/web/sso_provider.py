"""A real OpenID Connect provider for the SSO tests, served over HTTP on 127.0.0.1 by Hypercorn
in the test's nursery: discovery, an authorization endpoint that signs in ``provider.user``
at once (no login form), a token endpoint that checks the client's secret, the redirect URI and
the PKCE verifier (S256) before issuing an RS256 id_token, and the key set. With a tenant it
is Entra-style: discovery and issuer under ``/{tenant}/v2.0``, ``tid`` and ``ver`` claims (the
test gives the user an ``oid``), so the Entra ID preset can be pointed at it.

``provider.tamper`` makes the next id_tokens wrong in one way, for the refusal tests:
``nonce``, ``aud``, ``iss``, ``expired``, ``none`` (unsigned), ``wrong_key`` (signed by a key
the provider does not publish, under a published key id).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlencode

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "patch-manager-test"
CLIENT_SECRET = "test-client-secret-1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    method: str
    claims: dict[str, Any]


@dataclass
class Provider:
    base: str = ""
    user: dict[str, Any] = field(default_factory=dict)
    tamper: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    other_key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"})
    )
    codes: dict[str, _Code] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    tenant: str = ""  # set: Entra-style (per-tenant discovery and issuer, tid and ver claims)

    @property
    def issuer(self) -> str:
        return f"{self.base}/{self.tenant}/v2.0" if self.tenant else self.base

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        if request.path_params.get("tenant", "") != self.tenant:
            return JSONResponse({"error": "invalid_tenant"}, status_code=400)
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": f"{self.base}/token",
                "jwks_uri": f"{self.base}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = _Code(
            q["client_id"],
            q.get("redirect_uri", ""),
            q.get("nonce", ""),
            q.get("code_challenge", ""),
            q.get("code_challenge_method", ""),
            dict(self.user),
        )
        target = q.get("redirect_uri", "") + "?" + urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(target, status_code=302)

    async def token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if auth != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "redirect_uri"}, status_code=400
            )
        verifier = form.get("code_verifier", "")
        digest = _b64(hashlib.sha256(verifier.encode()).digest())
        if grant.method != "S256" or digest != grant.challenge:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "PKCE"}, status_code=400
            )
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": self.id_token(grant),
            }
        )

    def id_token(self, grant: _Code) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            **grant.claims,
        }
        if self.tenant:
            claims |= {"tid": self.tenant, "ver": "2.0"}
        if self.tamper == "nonce":
            claims["nonce"] = "not-the-nonce"
        elif self.tamper == "aud":
            claims["aud"] = "another-application"
        elif self.tamper == "iss":
            claims["iss"] = "https://evil.example.com"
        elif self.tamper == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 600
        if self.tamper == "none":
            header = _b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        key = self.other_key if self.tamper == "wrong_key" else self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


async def start_provider(nursery: trio.Nursery, tenant: str = "") -> Provider:
    """A provider listening on 127.0.0.1 (a free port) until the nursery ends; with a
    ``tenant``, Entra-style (``{base}/{tenant}/v2.0`` is its issuer)."""
    provider = Provider(tenant=tenant)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    app: Any = provider.app()  # hypercorn's ASGI type is narrower than Starlette's
    binds = await nursery.start(partial(serve, app, config, mode="asgi"))
    provider.base = str(binds[0]).rstrip("/")
    return provider
