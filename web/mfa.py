"""Second factors (R-7.2): TOTP (RFC 6238 with pyotp; 30 s steps, one step of skew either way,
each step's code accepted once; secrets sealed with ``ca.Sealer``, the key outside the
database; the enrolment QR code rendered server-side as SVG by segno), ten single-use recovery
codes (stored as SHA-256 hashes: they are 60 random bits, not passwords) and WebAuthn
(py_webauthn: registration and authentication ceremonies; several named authenticators per
user; a signature counter that goes back is refused and logged: a cloned authenticator).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyotp
import segno
import webauthn
from webauthn.helpers import exceptions as webauthn_errors
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ca import Sealer
from storage import AuditEntry, Database, get_user_by_id, run_audited
from storage import mfa as store
from storage.mfa import Credential, Factors

from . import audit

log = logging.getLogger(__name__)

ISSUER = "Linux Patch Manager"
STEP_S = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i

Kind = Literal["totp", "recovery"]


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits


def otpauth_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(text: str) -> str:
    """An inline SVG QR code of ``text`` (no script, no style attribute)."""
    out = io.BytesIO()
    qr = segno.make(text, error="m")
    qr.save(out, kind="svg", scale=4, xmldecl=False, svgclass="qr", lineclass="qrline")
    return out.getvalue().decode()


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (now, one before, one after) whose code ``code`` is; None if none."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // STEP_S)
    found = None
    for step in (current, current - 1, current + 1):  # compare all: no timing hint
        if hmac.compare_digest(totp.at(step * STEP_S), code) and found is None:
            found = step
    return found


def normalise_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def hash_recovery(code: str) -> bytes:
    return hashlib.sha256(normalise_recovery(code).encode()).digest()


def generate_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def looks_like_recovery(code: str) -> bool:
    return len(normalise_recovery(code)) == 12


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    uri: str
    svg: str


@dataclass(frozen=True)
class RelyingParty:
    """The WebAuthn relying party: its id (a host name) and the page origin."""

    id: str
    origin: str


class WebAuthnRefused(Exception):
    """A registration or assertion that does not verify (one line, for the page)."""


class Mfa:
    """The second factors of users, over the database."""

    def __init__(
        self, db: Database, sealer: Sealer, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock

    async def factors(self, user_id: int) -> Factors:
        return await self.db.run(store.factors, user_id)

    async def has_factor(self, user_id: int) -> bool:
        return await self.db.run(store.has_factor, user_id)

    # -- TOTP -------------------------------------------------------------------------------

    async def totp_enrolment(self, user_id: int, username: str) -> TotpEnrolment | None:
        """The unconfirmed secret waiting for its first code (a new one when there is none);
        None when the user's TOTP is confirmed already."""
        current = await self.db.run(store.totp_secret, user_id)
        if current is not None and current[1]:
            return None
        if current is not None:
            secret = await self._unseal(current[0])
        else:
            secret = new_secret()
            await self.db.run(store.begin_totp, user_id, await self._seal(secret))
        uri = otpauth_uri(secret, username)
        return TotpEnrolment(secret, uri, qr_svg(uri))

    async def confirm_totp(
        self,
        user_id: int,
        code: str,
        what: AuditEntry | None = None,
        session_hash: bytes | None = None,
    ) -> bool:
        """The first code of an enrolment: the secret becomes a factor (``what`` audited in
        the same transaction, the user's other password-only sessions end: see
        ``storage.mfa.confirm_totp``)."""
        current = await self.db.run(store.totp_secret, user_id)
        if current is None or current[1]:
            return False
        if not await self._accept_totp(user_id, current[0], code):
            return False
        return await run_audited(self.db, what, store.confirm_totp, user_id, session_hash)

    async def enrol_known_totp(self, user_id: int, secret: str) -> None:
        """A confirmed TOTP with a given secret (the demo's admin; test rigs)."""
        await self.db.run(store.enrol_totp, user_id, await self._seal(secret))

    async def remove_totp(self, user_id: int, what: AuditEntry | None = None) -> bool:
        return await run_audited(self.db, what, store.remove_totp, user_id)

    async def _accept_totp(self, user_id: int, sealed: str, code: str) -> bool:
        secret = await self._unseal(sealed)
        step = matching_step(secret, code, self.clock())
        if step is None:
            return False
        if not await self.db.run(store.use_totp_step, user_id, step):
            log.warning("mfa: a TOTP code of user %d was replayed (step %d)", user_id, step)
            return False
        return True

    async def check_code(self, user_id: int, code: str) -> Kind | None:
        """A login's (or re-authentication's) code: the confirmed TOTP's, or an unused
        recovery code (used up now). None when it is neither."""
        code = code.strip()[:64]
        if looks_like_recovery(code):

            def use(conn: Any) -> str | None:  # the user's name when the code was unused
                if not store.use_recovery_code(conn, user_id, hash_recovery(code)):
                    return None
                user = get_user_by_id(conn, user_id)
                return user.username if user is not None else f"#{user_id}"

            def used(name: str | None) -> AuditEntry | None:
                who = f"user:{name}"
                return None if name is None else audit.entry(who, "auth.mfa.recovery_used", who)

            # Used up only together with its entry: a failed audit write keeps the code.
            if await run_audited(self.db, used, use) is not None:
                log.info("mfa: user %d used a recovery code", user_id)
                return "recovery"
            return None
        current = await self.db.run(store.totp_secret, user_id)
        if current is None or not current[1]:
            return None
        return "totp" if await self._accept_totp(user_id, current[0], code) else None

    async def new_recovery_codes(self, user_id: int, what: AuditEntry | None = None) -> list[str]:
        """Ten fresh codes (the old ones stop working); shown once."""
        codes = generate_recovery_codes()
        hashes = [hash_recovery(c) for c in codes]
        await run_audited(self.db, what, store.replace_recovery_codes, user_id, hashes)
        return codes

    async def reset(self, user_id: int, by: str, what: AuditEntry | None = None) -> int:
        """Remove every factor of the user and end its sessions (``NotFound``)."""
        return await run_audited(self.db, what, lambda c: store.reset_factors(c, user_id, by=by))

    async def _seal(self, secret: str) -> str:
        return self.sealer.seal(secret)

    async def _unseal(self, sealed: str) -> str:
        return self.sealer.unseal(sealed)

    # -- WebAuthn ---------------------------------------------------------------------------

    async def registration_options(
        self, rp: RelyingParty, user_id: int, username: str
    ) -> tuple[str, bytes]:
        """(options JSON for navigator.credentials.create, challenge)."""
        existing = await self.db.run(store.credentials_of, user_id)
        options = webauthn.generate_registration_options(
            rp_id=rp.id,
            rp_name=ISSUER,
            user_name=username,
            user_id=str(user_id).encode(),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=c.credential_id) for c in existing
            ],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
        return webauthn.options_to_json(options), options.challenge

    async def register(
        self,
        rp: RelyingParty,
        user_id: int,
        challenge: bytes,
        credential: Any,
        name: str,
        what: AuditEntry | None = None,
        session_hash: bytes | None = None,
    ) -> Credential:
        try:
            verified = webauthn.verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
            )
        except (webauthn_errors.WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise WebAuthnRefused(f"the authenticator's answer did not verify: {exc}") from None
        return await run_audited(
            self.db,
            what,
            store.add_credential,
            user_id,
            verified.credential_id,
            verified.credential_public_key,
            verified.sign_count,
            name,
            session_hash,
        )

    async def authentication_options(self, rp: RelyingParty, user_id: int) -> tuple[str, bytes]:
        existing = await self.db.run(store.credentials_of, user_id)
        options = webauthn.generate_authentication_options(
            rp_id=rp.id,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c.credential_id) for c in existing],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return webauthn.options_to_json(options), options.challenge

    async def authenticate(
        self, rp: RelyingParty, user_id: int, challenge: bytes, credential: Any
    ) -> Credential:
        """Verify an assertion of one of the user's authenticators and move its counter on; a
        counter that does not move forward (a cloned authenticator) is refused and logged."""
        try:
            raw_id = webauthn.base64url_to_bytes(str(json.loads(credential)["rawId"]))
        except (ValueError, KeyError, TypeError):
            raise WebAuthnRefused("malformed authenticator answer") from None
        found = await self.db.run(store.credential_by_id, raw_id)
        if found is None or found.user_id != user_id:
            raise WebAuthnRefused("this authenticator is not registered for this account")
        try:
            verified = webauthn.verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=found.public_key,
                credential_current_sign_count=found.sign_count,
            )
        except webauthn_errors.InvalidAuthenticationResponse as exc:
            if "sign count" in str(exc).lower():
                named = await self.db.run(get_user_by_id, user_id)
                who = f"user:{named.username}" if named else f"user_id:{user_id}"
                await audit.record(
                    self.db,
                    audit.entry(
                        who,
                        "auth.webauthn",
                        who,
                        outcome="denied",
                        detail=f"authenticator {found.name!r}: sign count went back (cloned?)",
                    ),
                )
                log.warning("mfa: authenticator %r of user %d presented a sign count that did "
                            "not increase (stored %d): possibly cloned; refused", found.name,
                            user_id, found.sign_count)  # fmt: skip
                raise WebAuthnRefused(
                    "this authenticator's signature counter went back: it may have been "
                    "cloned; refused"
                ) from None
            raise WebAuthnRefused(f"the authenticator's answer did not verify: {exc}") from None
        except (webauthn_errors.WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise WebAuthnRefused(f"the authenticator's answer did not verify: {exc}") from None
        moved = await self.db.run(
            store.update_sign_count, found.id, found.sign_count, verified.new_sign_count
        )
        if not moved:
            raise WebAuthnRefused("this authenticator was used concurrently; try again")
        return found

    async def remove_credential(
        self, user_id: int, credential_row: int, what: AuditEntry | None = None
    ) -> str:
        return await run_audited(self.db, what, store.remove_credential, user_id, credential_row)
