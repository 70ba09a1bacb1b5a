"""Certificates (R-8.2, issue 14): list, renew the manager's own, revoke; the CRL (public)."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import re
import tarfile
from dataclasses import dataclass
from typing import Any

from storage import (
    AuditWriteFailed,
    Conflict,
    NotFound,
    StoredCertificate,
    delete_repo_config,
    get_host,
    list_certificates,
    list_hosts,
    repo_config,
    repo_configs,
    revoke_certificate,
    save_repo_config,
)

from .. import audit
from ..authz import Action, may, require
from ..handle import AlreadyExists, InvalidInput, Missing
from .base import Principal, System

_DNS_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")


@dataclass(frozen=True)
class CertificateView:
    serial: str
    kind: str
    subject: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # valid / revoked / expired
    revoked_at: dt.datetime | None
    expires_in_s: int

    @classmethod
    def of(cls, c: StoredCertificate, now: dt.datetime) -> CertificateView:
        status = c.status if c.status == "revoked" or c.not_after > now else "expired"
        return cls(format(c.serial, "x"), c.kind, c.subject, c.sans, c.not_before, c.not_after,
                   status, c.revoked_at, int((c.not_after - now).total_seconds()))  # fmt: skip


async def crl_pem(sys: System) -> bytes:
    """Public by design: agents fetch it (agent-api §7.3)."""
    return await sys.handle.crl_pem()


async def listing(sys: System, who: Principal) -> tuple[list[CertificateView], dict[str, int]]:
    """Every certificate the CA issued, newest first, and seconds to expiry of those in use."""
    require(who, Action.MANAGE_PKI)
    now = dt.datetime.now(dt.UTC)
    rows = await sys.db.run(list_certificates)
    views = [CertificateView.of(c, now) for c in reversed(rows)]
    expiry = {k: int(v) for k, v in sys.handle.certificate_expiry().items()}
    return views, expiry


@dataclass(frozen=True)
class CertificateHost:
    host_id: int
    label: str  # the display name, or the name


async def hosts_of(
    sys: System, who: Principal, views: list[CertificateView]
) -> dict[str, CertificateHost]:
    """The host each agent certificate belongs to, by serial: the host whose name, address or
    display name (an enrolled host's FQDN) is one of the certificate's SANs."""
    require(who, Action.MANAGE_PKI)
    by_name: dict[str, CertificateHost] = {}
    for h in await sys.db.run(list_hosts):
        found = CertificateHost(h.id, h.display_name or h.name)
        for name in (h.display_name.lower(), h.address or "", h.name.lower()):  # strongest last
            if name:
                by_name[name] = found
    out: dict[str, CertificateHost] = {}
    for v in views:
        if v.kind == "agent_server":
            match = next((by_name[n.lower()] for n in v.sans if n.lower() in by_name), None)
            if match is not None:
                out[v.serial] = match
    return out


async def reissue_bundle(sys: System, who: Principal, serial_text: str) -> tuple[str, bytes]:
    """A new agent certificate with the same SANs as the agent certificate ``serial_text``, as
    the agent's files. The old certificate stays valid until it is revoked."""
    require(who, Action.MANAGE_PKI)
    serial = parse_serial(serial_text)
    old = next((c for c in await sys.db.run(list_certificates) if c.serial == serial), None)
    if old is None:
        raise Missing(f"no certificate with serial {serial:x}")
    if old.kind != "agent_server" or not old.sans:
        raise InvalidInput("serial", "only agent certificates are reissued here")
    view = CertificateView.of(old, dt.datetime.now(dt.UTC))
    host = (await hosts_of(sys, who, [view])).get(view.serial)
    names = list(old.sans)
    return f"{names[0]}-certificates.tar.gz", await _bundle(
        sys, names, host.host_id if host else None, who, reissue_of=serial
    )


async def renew(sys: System, who: Principal, kind: str) -> str:
    """Renew the manager client or web certificate now; returns the new serial (hex)."""
    require(who, Action.MANAGE_PKI)
    if kind not in ("manager_client", "web_server"):
        raise InvalidInput("kind", "only manager_client and web_server are renewed here")
    try:
        return await sys.handle.renew_certificate(kind, audit=lambda serial: audit.entry(
            who, "certificate.renew", f"certificate:{serial}",
            after={"kind": kind, "serial": serial},
        ))  # fmt: skip
    except AuditWriteFailed as exc:
        raise audit.DoneNotRecorded(
            f"the {kind} certificate was renewed and is in use (see the server log)"
        ) from exc


def parse_serial(text: str) -> int:
    cleaned = text.strip().lower().replace(":", "")
    if not 1 <= len(cleaned) <= 40 or any(c not in "0123456789abcdef" for c in cleaned):
        raise InvalidInput("serial", "a serial is 1 to 40 hex digits")
    return int(cleaned, 16)


async def revoke(sys: System, who: Principal, serial_text: str) -> str:
    """Revoke an agent certificate: the CRL is re-signed and the manager refuses it at once.
    The manager's own certificates are renewed, not revoked (409)."""
    require(who, Action.MANAGE_PKI)
    serial = parse_serial(serial_text)
    try:
        await audit.audited(  # refuses the manager's own (storage rule)
            sys, audit.entry(who, "certificate.revoke", f"certificate:{serial:x}"),
            revoke_certificate, serial,
        )  # fmt: skip
    except NotFound as exc:
        raise Missing(str(exc)) from None
    except Conflict as exc:
        raise AlreadyExists("serial", str(exc)) from None
    await sys.handle.certificates_revoked()
    return format(serial, "x")


def _tar(files: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def host_bundle(sys: System, who: Principal, host_id: int) -> tuple[str, bytes]:
    """A new agent certificate for the host (SANs = its name, address and a display name that is
    a dotted DNS name, as for an enrolled host's FQDN) with the files the
    agent reads (``ca.pem``, ``server.pem`` = leaf + root, ``server.key.pem`` 0600, ``crl.pem``)
    as a .tar.gz, named after the host. The key exists only in this answer."""
    require(who, Action.MANAGE_PKI)
    try:
        host = await sys.db.run(get_host, host_id)
    except NotFound:
        raise Missing(f"no host with id {host_id}") from None
    names = [host.name] + ([host.address] if host.address and host.address != host.name else [])
    fqdn = host.display_name.lower()
    if "." in fqdn and _DNS_NAME.match(fqdn) and not fqdn.rsplit(".", 1)[-1].isdigit():
        names.append(fqdn)  # an enrolled host: name = its address, display name = its FQDN
    names = list(dict.fromkeys(names))
    return f"{host.name}-certificates.tar.gz", await _bundle(sys, names, host.id, who)


async def issue_bundle(sys: System, who: Principal, text: str) -> tuple[str, bytes]:
    """A new agent certificate for the names in ``text`` (FQDNs and/or IP addresses separated
    by commas or spaces; one certificate with all of them as SANs) as the agent's files."""
    require(who, Action.MANAGE_PKI)
    names = [n for n in text.replace(",", " ").split() if n]
    if not names or len(names) > 20:
        raise InvalidInput("names", "give 1 to 20 FQDNs or IP addresses")
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if len(name) > 253 or not _DNS_NAME.match(name):
                raise InvalidInput(
                    "names", f"{name!r} is neither an IP address nor a DNS name"
                ) from None
    return f"{names[0]}-certificates.tar.gz", await _bundle(sys, names, None, who)


async def _bundle(
    sys: System, names: list[str], host_id: int | None, who: Principal, reissue_of: int = 0
) -> bytes:
    after: dict[str, Any] = {"names": names, "host_id": host_id}
    if reissue_of:
        after["reissue_of"] = format(reissue_of, "x")
    _, chain, key = await sys.handle.issue_agent_certificate(
        names, host_id,
        audit=lambda s: audit.entry(who, "certificate.issue", f"certificate:{s:x}", after=after),
    )  # fmt: skip
    return _tar(
        {
            "ca.pem": (sys.handle.root_ca_pem(), 0o644),
            "server.pem": (chain, 0o644),
            "server.key.pem": (key, 0o600),
            "crl.pem": ((await sys.handle.crl_pem()).decode(), 0o644),
        }
    )


# -- repository configuration (agent-api §7.4, minimal: stored and served, not hosted) --------


async def repo_config_for(sys: System, distro_id: str) -> dict[str, Any] | None:
    """Public (agents call it): the configuration for ``distro_id``, or None."""
    if not distro_id:
        return None
    found: dict[str, Any] | None = await sys.db.run(repo_config, distro_id.lower())
    return found


async def list_repo_configs(sys: System, who: Principal) -> list[dict[str, Any]]:
    require(who, Action.MANAGE_PKI)
    found: list[dict[str, Any]] = await sys.db.run(repo_configs)
    return found


async def save_repo(sys: System, who: Principal, value: dict[str, Any]) -> None:
    require(who, Action.MANAGE_PKI)
    await audit.audited(
        sys, audit.entry(who, "repo_config.save", f"repo_config:{value['distro_id']}",
                         after=value),
        save_repo_config, value["distro_id"], value,
    )  # fmt: skip


async def delete_repo(sys: System, who: Principal, distro_id: str) -> bool:
    """Idempotent: True when there was a configuration to delete."""
    require(who, Action.MANAGE_PKI)
    deleted: bool = await audit.audited(
        sys, lambda d: audit.entry(who, "repo_config.delete", f"repo_config:{distro_id}")
        if d else None,
        delete_repo_config, distro_id,
    )  # fmt: skip
    return deleted


WARN_DAYS = 30  # a certificate of ours this close to expiry is shown on the dashboard
WARN_CRL_DAYS = 5  # the CRL (re-signed daily, valid 7 days) this close means re-signing fails


def expiry_warnings(sys: System, who: Principal) -> list[str]:
    """For admins: the manager's certificates (and the CRL) close to expiry. Renewal at 2/3 of
    the lifetime means a warning here says renewal has been failing for weeks."""
    if not may(who, Action.MANAGE_PKI):
        return []
    labels = {"root": "root CA", "manager_client": "agent client certificate",
              "web_server": "web certificate", "crl": "CRL",
              "agent_server": "soonest agent certificate"}  # fmt: skip
    out = []
    for kind, seconds in sorted(sys.handle.certificate_expiry().items()):
        limit = WARN_CRL_DAYS if kind == "crl" else WARN_DAYS
        if seconds < limit * 86_400:
            state = "has expired" if seconds <= 0 else f"expires in {seconds / 86_400:.1f} days"
            out.append(f"The {labels.get(kind, kind)} {state}.")
    return out
