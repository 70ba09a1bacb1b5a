"""OpenID Connect single sign-on (R-7.5): Entra ID (Azure AD) first, any standard issuer by its
discovery URL.

The flow is the authorization code flow with PKCE (S256), ``state`` and ``nonce``. The code
exchange runs through authlib's ``AsyncOAuth2Client`` (httpx2, which runs on trio); discovery
and the provider's keys (JWKS) are fetched with httpx2 and cached (the keys are fetched again
when a token names a key id the cache does not have: the provider rotated its keys). The
id_token is checked here with joserfc: signature by the provider's key named by ``kid``, with an
asymmetric algorithm only (``none`` and shared-secret algorithms are refused), issuer, audience
(and ``azp`` when several), expiry, issue time and the login's nonce.

Claims are mapped to a role and groups by the admin's table (``map_claims``): the strongest role
among the matched values, the union of their groups; no match is a refusal.

Errors: ``SsoError`` (one line for the person signing in and for the log; ``status`` is the
HTTP status of the page that says it).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
import trio
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from storage.sso import SsoConfig, SsoMapping

log = logging.getLogger(__name__)

ENTRA_AUTHORITY = "https://login.microsoftonline.com"
CLIENT_SECRET_ENV = "PM_OIDC_CLIENT_SECRET"  # overrides the sealed secret stored in the database
SCOPES = "openid profile email"
# Asymmetric signatures only: "none" and the HMAC family (keyed with the client secret, which
# the client itself knows) never prove that the provider issued the token.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
ROLE_RANK = {"auditor": 1, "operator": 2, "admin": 3}
LEEWAY_S = 60  # clock difference tolerated on exp / iat
MAX_BODY = 512 * 1024  # discovery documents and key sets are small


class SsoError(Exception):
    """A sign-in or configuration check that failed; ``str()`` is one line for people."""

    def __init__(self, message: str, status: int = 403, identity: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.identity = identity  # "issuer subject" once the id_token proved who it is


def discovery_url(config: SsoConfig, entra_authority: str = ENTRA_AUTHORITY) -> str:
    """The provider's discovery document: Entra's per tenant, or the URL the admin gave."""
    if config.preset == "entra":
        return f"{entra_authority}/{config.tenant_id}/v2.0/.well-known/openid-configuration"
    return config.discovery_url


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a provider URL (None when it can): https, or plain http to a
    loopback address only (a provider on this machine, e.g. in tests)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "not a URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "must be https (plain http only to a loopback address)"
    return "must be an https URL"


WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    auth_methods: tuple[str, ...] = ("client_secret_basic",)

    @classmethod
    def parse(cls, document: Any, url: str) -> ProviderMetadata:
        if not isinstance(document, dict):
            raise SsoError(f"the discovery document at {url} is not a JSON object", 502)
        values: dict[str, str] = {}
        for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(key)
            if not isinstance(value, str) or not value:
                raise SsoError(f"the discovery document at {url} has no {key}", 502)
            if key != "issuer" and (problem := url_problem(value)):
                raise SsoError(f"the provider's {key} {value!r} {problem}", 502)
            values[key] = value
        # OpenID Connect Discovery 1.0 §4.3: the issuer is the URL the document was found under
        issuer = values["issuer"].rstrip("/")
        expected = url.removesuffix(WELL_KNOWN).rstrip("/")
        same = issuer == expected if url.endswith(WELL_KNOWN) else url.startswith(issuer)
        if not same:
            raise SsoError(
                f"the discovery document at {url} names the issuer {values['issuer']!r}, not "
                f"{expected!r} (a document must name the issuer it was found under)",
                502,
            )
        methods = document.get("token_endpoint_auth_methods_supported")
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            methods = ["client_secret_basic"]  # the default of OpenID Connect Discovery 1.0
        return cls(**values, auth_methods=tuple(methods))


@dataclass(frozen=True)
class Mapped:
    """What the claims grant: a role and groups (ids)."""

    role: str
    group_ids: tuple[int, ...]


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def map_claims(
    claims: Mapping[str, Any], claim: str, mappings: Sequence[SsoMapping]
) -> Mapped | None:
    """The strongest role of the mappings whose value the ``claim`` carries and the union of
    their groups; None when no value is mapped."""
    values = set(claim_values(claims, claim))
    matched = [m for m in mappings if m.claim_value in values]
    if not matched:
        return None
    role = max((m.role for m in matched), key=lambda r: ROLE_RANK.get(r, 0))
    groups = sorted({g for m in matched for g in m.group_ids})
    return Mapped(role, tuple(groups))


def subject_of(claims: Mapping[str, Any], preset: str) -> str:
    """Entra's ``oid`` (the same for every application of the tenant) when there, else ``sub``."""
    if preset == "entra" and isinstance(claims.get("oid"), str) and claims["oid"]:
        return str(claims["oid"])
    return str(claims["sub"])


def name_hint(claims: Mapping[str, Any]) -> str:
    for key in ("preferred_username", "upn", "email", "name", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return "sso-user"


@dataclass(frozen=True)
class Check:
    """One line of the configuration test: what was checked, whether it passed, the detail."""

    name: str
    ok: bool
    detail: str


KEYS_TTL = 24 * 3600.0  # a provider's key set is fetched again at least once a day


@dataclass
class _Keys:
    keys: KeySet
    fetched: float


@dataclass
class OidcClient:
    """Talks to providers: discovery, keys, the code exchange, id_token validation.

    Every network step runs under ``timeout`` seconds (``SsoError`` 502 when it fails).
    ``clock`` gives the wall-clock time (seconds) that expiry is checked against."""

    timeout: float = 10.0
    verify: Any = True  # an ssl.SSLContext (tests) or True (the system's trust store)
    clock: Callable[[], float] = time.time
    metadata_ttl: float = 3600.0
    entra_authority: str = ENTRA_AUTHORITY  # an Entra-style provider elsewhere (tests)
    _metadata: dict[str, tuple[ProviderMetadata, float]] = field(default_factory=dict)
    _keys: dict[str, _Keys] = field(default_factory=dict)

    def discovery_url(self, config: SsoConfig) -> str:
        return discovery_url(config, self.entra_authority)

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            with trio.fail_after(self.timeout):
                async with httpx2.AsyncClient(verify=self.verify, timeout=self.timeout) as c:
                    response = await c.get(url, headers={"accept": "application/json"})
        except (httpx2.HTTPError, trio.TooSlowError, OSError) as exc:
            raise SsoError(f"cannot fetch the {what} from {url}: {_short(exc)}", 502) from None
        if response.status_code != 200:
            raise SsoError(f"the {what} at {url} answered HTTP {response.status_code}", 502)
        if len(response.content) > MAX_BODY:
            raise SsoError(f"the {what} at {url} is larger than {MAX_BODY} bytes", 502)
        try:
            return json.loads(response.content)
        except ValueError:
            raise SsoError(f"the {what} at {url} is not JSON", 502) from None

    async def metadata(self, url: str, *, fresh: bool = False) -> ProviderMetadata:
        """The provider's discovery document (cached for ``metadata_ttl`` seconds)."""
        if problem := url_problem(url):
            raise SsoError(f"the discovery URL {problem}", 422)
        cached = self._metadata.get(url)
        now = trio.current_time()
        if cached is not None and not fresh and now - cached[1] < self.metadata_ttl:
            return cached[0]
        found = ProviderMetadata.parse(await self._get_json(url, "discovery document"), url)
        self._metadata[url] = (found, now)
        return found

    async def keys(self, jwks_uri: str, *, fresh: bool = False) -> KeySet:
        """The provider's signing keys (cached for ``KEYS_TTL`` seconds of ``clock``; fetched
        again at once when an id_token names an unknown key: ``fresh``)."""
        cached = self._keys.get(jwks_uri)
        if cached is not None and not fresh and self.clock() - cached.fetched < KEYS_TTL:
            return cached.keys
        document = await self._get_json(jwks_uri, "key set (JWKS)")
        try:
            keys = KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise SsoError(
                f"the key set at {jwks_uri} cannot be read: {_short(exc)}", 502
            ) from None
        self._keys[jwks_uri] = _Keys(keys, self.clock())
        return keys

    async def exchange(
        self,
        meta: ProviderMetadata,
        client_id: str,
        client_secret: str,
        code: str,
        code_verifier: str,
        redirect_uri: str,
    ) -> dict[str, Any]:
        """The token response for ``code`` (``SsoError`` when the provider refuses it)."""
        if not client_secret:
            method = "none"
        elif "client_secret_basic" in meta.auth_methods:
            method = "client_secret_basic"
        else:
            method = "client_secret_post"
        try:
            with trio.fail_after(self.timeout):
                async with AsyncOAuth2Client(
                    client_id=client_id,
                    client_secret=client_secret or None,
                    token_endpoint_auth_method=method,
                    redirect_uri=redirect_uri,
                    verify=self.verify,
                    timeout=self.timeout,
                ) as oauth:
                    token = await oauth.fetch_token(
                        meta.token_endpoint,
                        grant_type="authorization_code",
                        code=code,
                        code_verifier=code_verifier,
                    )
        except OAuthError as exc:
            raise SsoError(f"the provider refused the sign-in code: {_short(exc)}", 403) from None
        except (httpx2.HTTPError, trio.TooSlowError, OSError, ValueError) as exc:
            raise SsoError(
                f"the code exchange with the provider failed: {_short(exc)}", 502
            ) from None
        return dict(token)

    async def validate_id_token(
        self, id_token: Any, meta: ProviderMetadata, client_id: str, nonce: str
    ) -> dict[str, Any]:
        """The id_token's claims once signature, issuer, audience, expiry and nonce hold."""
        if not isinstance(id_token, str) or not id_token:
            raise SsoError("the provider sent no id_token")
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            raise SsoError("the id_token is not a signed JWT") from None
        alg = str(header.get("alg", ""))
        if alg.lower() == "none" or not alg:
            raise SsoError("the id_token is unsigned (alg none); refused")
        if alg not in ALGORITHMS:
            raise SsoError(f"the id_token is signed with {alg}; only provider keys are accepted")
        keys = await self.keys(meta.jwks_uri)
        kid = header.get("kid")
        if kid is not None and not _has_kid(keys, str(kid)):
            keys = await self.keys(meta.jwks_uri, fresh=True)  # the provider rotated its keys
            if not _has_kid(keys, str(kid)):
                raise SsoError("the id_token names a key the provider does not publish")
        try:
            token = jwt.decode(id_token, keys, algorithms=[alg])
        except JoseError:
            raise SsoError(
                "the id_token's signature does not verify with the provider's keys"
            ) from None
        except (ValueError, TypeError, KeyError):
            raise SsoError("the id_token cannot be read") from None
        claims = dict(token.claims)
        _check_claims(claims, meta.issuer, client_id, nonce, self.clock())
        return claims

    async def test(self, config: SsoConfig, client_secret: str) -> list[Check]:
        """Check a configuration without signing anyone in: discovery, its endpoints, the key
        set. Each step's outcome is one ``Check``; a failed step ends the list."""
        checks: list[Check] = []
        url = self.discovery_url(config)
        if not config.client_id:
            checks.append(Check("client id", False, "no client id is configured"))
        else:
            checks.append(Check("client id", True, config.client_id))
        secret_source = (
            f"from ${CLIENT_SECRET_ENV}" if os.environ.get(CLIENT_SECRET_ENV) else "stored, sealed"
        )
        checks.append(
            Check(
                "client secret",
                bool(client_secret),
                secret_source if client_secret else "none: only a public client works",
            )
        )
        try:
            meta = await self.metadata(url, fresh=True)
        except SsoError as exc:
            checks.append(Check("discovery document", False, str(exc)))
            return checks
        checks.append(Check("discovery document", True, url))
        checks.append(Check("issuer", True, meta.issuer))
        checks.append(
            Check(
                "endpoints",
                True,
                f"authorize {meta.authorization_endpoint}, token {meta.token_endpoint}",
            )
        )
        try:
            keys = await self.keys(meta.jwks_uri, fresh=True)
        except SsoError as exc:
            checks.append(Check("signing keys", False, str(exc)))
            return checks
        usable = [k for k in keys.keys if k.key_type in ("RSA", "EC", "OKP")]
        checks.append(
            Check(
                "signing keys",
                bool(usable),
                f"{len(usable)} public key(s) at {meta.jwks_uri}"
                if usable
                else f"no RSA/EC public key at {meta.jwks_uri}",
            )
        )
        return checks


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


def _check_claims(
    claims: dict[str, Any], issuer: str, client_id: str, nonce: str, now: float
) -> None:
    if claims.get("iss") != issuer:
        raise SsoError(f"the id_token was issued by {claims.get('iss')!r}, not by {issuer!r}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise SsoError("the id_token is meant for another application (audience)")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise SsoError("the id_token names another authorized party (azp)")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise SsoError("the id_token has no expiry")
    if exp + LEEWAY_S < now:
        when = dt.datetime.fromtimestamp(exp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise SsoError(f"the id_token expired at {when}")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool) and iat - LEEWAY_S > now:
        raise SsoError("the id_token was issued in the future (check the clocks)")
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise SsoError("the id_token's nonce does not belong to this sign-in (replayed?)")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise SsoError("the id_token names no subject")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
