"""ES256 signing keys of the access JWTs (R-7.3), rotated with overlap.

A key signs new access tokens for ``SIGN_FOR``; it keeps verifying for ``OVERLAP`` after that
(longer than an access token lives), so tokens signed just before a rotation stay valid until
they expire; then it retires and tokens naming its ``kid`` are refused. The private key is
stored in the database only sealed with the key outside it (``ca.Sealer``); public keys are
served as a JWKS at ``GET /api/v1/auth/jwks.json``.

Every time (issue, expiry, rotation) comes from ``clock``, so tests move time without sleeping;
PyJWT's own wall-clock checks are switched off in favour of the same clock.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ca import Sealer
from ca.keys import SealError
from storage import Database
from storage.tokens import SigningKey, add_signing_key, delete_retired_keys, signing_keys

ISSUER = "patch-manager"
AUDIENCE = "patch-manager-api"
ALGORITHM = "ES256"
ACCESS_LIFETIME = dt.timedelta(minutes=15)
SIGN_FOR = dt.timedelta(days=1)
OVERLAP = dt.timedelta(hours=1)  # > ACCESS_LIFETIME: the old key verifies what it signed

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InvalidJwt(Exception):
    """An access token that is not ours or no longer valid (one line says why)."""


@dataclass(frozen=True)
class _Public:
    key: ec.EllipticCurvePublicKey
    retire_at: dt.datetime


class KeyRing:
    def __init__(self, db: Database, sealer: Sealer, clock: Clock = utc_now) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self._public: dict[str, _Public] = {}

    async def _keys(self) -> list[SigningKey]:
        keys = await self.db.run(signing_keys, self.clock())
        self._public = {
            k.kid: _Public(
                _load_public(k.public_pem),
                k.retire_at,
            )
            for k in keys
        }
        return keys

    async def _signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        now = self.clock()
        for key in await self._keys():
            if key.sign_until > now:
                try:
                    private = serialization.load_pem_private_key(
                        self.sealer.unseal(key.private_sealed).encode(), password=None
                    )
                except SealError:
                    continue  # sealed with another key (a lost sealing key): make a new one
                assert isinstance(private, ec.EllipticCurvePrivateKey)
                return key.kid, private
        return await self.rotate()

    async def rotate(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """A new signing key from now on; the previous ones keep verifying until they retire
        (at most ``SIGN_FOR + OVERLAP`` after their creation)."""
        now = self.clock()
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = secrets.token_hex(8)
        key = SigningKey(kid, public.decode(), self.sealer.seal(pem), now, now + SIGN_FOR,
                         now + SIGN_FOR + OVERLAP)  # fmt: skip
        await self.db.run(add_signing_key, key)
        await self.db.run(delete_retired_keys, now)
        await self._keys()
        return kid, private

    async def sign(self, claims: dict[str, Any]) -> tuple[str, dt.datetime]:
        """An access JWT carrying ``claims`` (plus iss, aud, iat, exp, jti); its expiry."""
        kid, private = await self._signing_key()
        now = self.clock()
        expires = now + ACCESS_LIFETIME
        payload = {
            **claims,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(12),
        }
        token = jwt.encode(payload, private, algorithm=ALGORITHM, headers={"kid": kid})
        return token, expires

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid access JWT; ``InvalidJwt`` naming the problem otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidJwt("not a JWT") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidJwt(f"only {ALGORITHM} tokens with a kid are accepted")
        now = self.clock()
        public = self._public.get(kid)
        if public is None or public.retire_at <= now:
            await self._keys()  # another process may have rotated; or it retired
            public = self._public.get(kid)
        if public is None or public.retire_at <= now:
            raise InvalidJwt("unknown or retired signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public.key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "require": ["exp", "iat", "iss", "aud", "sub"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise InvalidJwt(f"invalid token: {exc}") from None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now.timestamp():
            raise InvalidJwt("the access token has expired")
        return claims

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify now (signing and overlapping), as a JWK set."""
        await self._keys()
        keys = []
        for kid, public in self._public.items():
            jwk = json.loads(ECAlgorithm.to_jwk(public.key))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": keys}


def _load_public(pem: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key
