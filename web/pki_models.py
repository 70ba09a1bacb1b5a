"""API shapes of the certificate lifecycle (issue 14): certificates, renewal, revocation."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from .models import Body, Reply


class CertificateOut(Reply):
    serial: str = Field(description="lower-case hex, as agents list it")
    kind: Literal["root", "manager_client", "web_server", "agent_server"]
    subject: str
    sans: list[str]
    not_before: dt.datetime
    not_after: dt.datetime
    status: Literal["valid", "revoked", "expired"]
    revoked_at: dt.datetime | None
    expires_in_s: int


class Certificates(Reply):
    certificates: list[CertificateOut]
    expiry_s: dict[str, int] = Field(
        description="seconds to expiry of the certificates in use and of the CRL, by kind"
    )


class RenewRequest(Body):
    kind: Literal["manager_client", "web_server"]


class Renewed(Reply):
    kind: str
    serial: str


class RevokeRequest(Body):
    serial: str = Field(max_length=64, description="serial in hex (checked after the permission)")


class Revoked(Reply):
    serial: str
