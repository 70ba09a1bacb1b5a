"""API shapes of the certificate lifecycle (issue 14): certificates, renewal, revocation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from .models import Body, Query, Reply


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
OS_DETAIL_KEYS = 32  # entries kept of os_details
OS_DETAIL_CHARS = 256  # characters kept of each key and value


def printable(text: str, limit: int = OS_DETAIL_CHARS) -> str:
    """Control characters (terminal escapes) removed, cut to ``limit`` characters."""
    return _CONTROL.sub("", text)[:limit]


def _agent_ipv4(value: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("an IPv4 address (the agent listens on IPv4)") from None
    if address.is_unspecified or address.is_multicast or address.is_link_local:
        raise ValueError("an IPv4 address that is not unspecified, multicast or link-local")
    return str(address)


def _host_name(value: str) -> str:
    labels = value.rstrip(".").split(".")
    if labels[-1].isdigit():  # 127.0.0.1, 10.1: an address is not a name (no numeric TLD)
        raise ValueError("a DNS name, not an IP address")
    return value.rstrip(".").lower()


class EnrolRequest(Body):
    """What the agent sends (agent-api §7.1). Unknown fields are ignored (agents of other
    versions may send more)."""

    model_config = ConfigDict(extra="ignore")
    machine_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[0-9A-Za-z-]+$", description="/etc/machine-id"
    )
    fqdn: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$"),
        AfterValidator(_host_name),
    ]
    ip_address: Annotated[str, Field(max_length=45), AfterValidator(_agent_ipv4)]
    os_details: dict[str, Any] = Field(
        default_factory=dict, description=f"kept: {OS_DETAIL_KEYS} entries, values as text"
    )
    hostname: str = Field(default="", max_length=253)

    @field_validator("os_details", mode="after")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, str]:
        items = list(value.items())[:OS_DETAIL_KEYS]
        return {printable(str(k)): printable(v if isinstance(v, str) else str(v)) for k, v in items}

    @field_validator("hostname", mode="after")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable(value)

    bootstrap_token: str = Field(
        default="", max_length=256, description="for auto-approval rules (never stored)"
    )


class EnrolAccepted(Reply):
    polling_token: str


class EnrolStatus(Reply):
    """``pending`` / ``denied`` / ``notfound``, or ``approved`` with the agent's files."""

    status: Literal["pending", "denied", "notfound", "approved"]
    ca_crt: str | None = None
    server_crt: str | None = None
    server_key: str | None = None
    crl_pem: str | None = None
    repo_config: dict[str, Any] | None = None


class EnrolmentOut(Reply):
    id: int
    machine_id: str
    fqdn: str
    ip_address: str
    hostname: str
    os_details: dict[str, Any]
    source_address: str
    status: str
    group_name: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    host_id: int | None
    created_at: dt.datetime
    expires_at: dt.datetime


class Enrolments(Reply):
    enrolments: list[EnrolmentOut]


class Approve(Body):
    group: str | None = Field(default=None, max_length=100, description="group of the new host")


KEYRING_DIRS = ("/etc/apt/keyrings/", "/usr/share/keyrings/", "/etc/pki/rpm-gpg/")


def _keyring_path(value: str) -> str:
    """Empty (the agent's default), or a file directly or deeper under a keyring directory."""
    if not value:
        return value
    parts = value.split("/")
    if (
        not value.startswith(KEYRING_DIRS)
        or value.endswith("/")
        or any(p in (".", "..") for p in parts)
        or _CONTROL.search(value)
    ):
        raise ValueError(f"an absolute file path under {', '.join(KEYRING_DIRS)} without '..'")
    return value


class RepoConfig(Body):
    """The repository an agent of one distribution uses (agent-api §7.4)."""

    distro_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="os-release ID")
    gpg_public_key: str = Field(default="", max_length=100_000, description="ASCII-armored")
    sources_config: str = Field(default="", max_length=100_000, description="repo file text")
    keyring_path: Annotated[
        str,
        Field(default="", max_length=4096, description="under " + ", ".join(KEYRING_DIRS)),
        AfterValidator(_keyring_path),
    ]


class RepoConfigs(Reply):
    repo_configs: list[RepoConfig]


class RepoConfigQuery(Query):
    distro_id: str = Field(min_length=1, max_length=64)
    codename: str = Field(default="", max_length=64)


class DistroId(Body):
    distro_id: str = Field(max_length=64)
