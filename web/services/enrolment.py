"""Agent enrolment (agent-api §7.1, issue 14): requests from agents (public), the admin approval
queue, and the bundle handed over once to an approved agent.

- ``request``: a new pending request (202 + polling token). One request per source address per
  ``RATE_WINDOW_S`` (429); an FQDN or address of another host or of the manager gets 409; a
  machine whose host is registered may ask again from that address (a renewal, agent-api §1.3);
  asking again while pending supersedes the earlier request.
- ``status``: ``pending`` / ``denied`` / ``notfound`` (unknown, superseded, expired even if
  approved, or already delivered) / ``approved`` with ``ca_crt``, ``server_crt``,
  ``server_key``, ``crl_pem``. The request is claimed before its certificate is issued (one
  certificate per request). The key is generated for that answer and not stored: the first
  poll after approval gets it, later polls get ``notfound``.
- ``approve`` registers the host (its address, display name = FQDN, optional group; the actor
  starts) and marks the request approved (a renewal keeps the registered host); ``deny`` ends
  it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from typing import Any

from storage import (
    Conflict,
    EnrolmentRow,
    NotFound,
    claim_enrolment,
    create_enrolment,
    decide_enrolment,
    deliver_enrolment,
    enrolled_host,
    enrolment_by_token,
    get_enrolment,
    list_enrolments,
    repo_config,
)

from .. import audit
from ..authz import Action, require
from ..handle import AlreadyExists, HandleError, Missing, TooBusy
from .base import Principal, System

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # one enrolment request per source address per minute (agent docs);
# both this and the token lifetime come from [pki] through SystemHandle.enrolment_settings


class EnrolGate:
    """Per-source-address rate limit of enrolment requests (memory only, pruned as it goes)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._last: dict[str, float] = {}

    def admit(self, source: str, window_s: float | None = None) -> None:
        if window_s is not None:
            self.window_s = window_s
        if self.window_s <= 0:
            return
        now = time.monotonic()
        if len(self._last) > 10_000:
            self._last = {a: t for a, t in self._last.items() if now - t < self.window_s}
        last = self._last.get(source)
        if last is not None and now - last < self.window_s:
            raise TooBusy("source", f"one enrolment request per {self.window_s:g} s per address")
        self._last[source] = now


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _auto_approved(
    rules: tuple[tuple[str, ...], str, str], source: str, ip_address: str, token: str
) -> bool:
    """The request comes from the very address the agent claims, that address is in one of the
    CIDRs, and the bootstrap token matches when one is configured (constant-time compare)."""
    cidrs, expected, _ = rules
    if not cidrs:
        return False
    try:
        address = ipaddress.ip_address(ip_address)
        if ipaddress.ip_address(source) != address:
            return False
    except ValueError:
        return False
    if not any(address in ipaddress.ip_network(c, strict=False) for c in cidrs):
        return False
    return not expected or hmac.compare_digest(token.encode(), expected.encode())


async def request(
    sys: System, gate: EnrolGate, source: str, *, machine_id: str, fqdn: str, ip_address: str,
    hostname: str, os_details: dict[str, Any], bootstrap_token: str = "",
) -> str:  # fmt: skip
    """Public (agents have no account). Returns the polling token. A request matching the
    auto-approval rules is approved at once (``decided_by`` = ``auto-approval``)."""
    hours, rate_s = sys.handle.enrolment_settings()
    gate.admit(source, rate_s)
    token = secrets.token_urlsafe(32)
    try:
        await audit.audited(
            sys,
            lambda enrolment_id: audit.entry(
                "anonymous", "enrolment.request", f"enrolment:{enrolment_id}",
                after={"machine_id": machine_id, "fqdn": fqdn.lower(), "ip_address": ip_address,
                       "hostname": hostname},
            ),
            lambda conn: create_enrolment(
                conn, token_sha256=_digest(token), machine_id=machine_id, fqdn=fqdn.lower(),
                ip_address=ip_address, hostname=hostname, os_details=os_details,
                source_address=source,
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
            ),
        )  # fmt: skip
    except Conflict as exc:
        raise AlreadyExists("machine_id", str(exc)) from None
    rules = sys.handle.auto_approval()
    if _auto_approved(rules, source, ip_address, bootstrap_token):
        row = await sys.db.run(enrolment_by_token, _digest(token))
        if row is not None:
            try:
                await _approve(sys, row, rules[2] or None, "auto-approval")
            except HandleError as exc:  # e.g. an address the policy refuses: an admin decides
                log.warning("enrolment of %s left for an admin: %s", fqdn, exc)
    return token


async def status(sys: System, token: str) -> dict[str, Any]:
    """Public: what the agent polling with ``token`` gets."""
    if not 1 <= len(token) <= 128:
        return {"status": "notfound"}
    row = await sys.db.run(enrolment_by_token, _digest(token))
    now = dt.datetime.now(dt.UTC)
    if row is None or row.status in ("superseded", "delivered"):
        return {"status": "notfound"}
    if row.status == "denied":
        return {"status": "denied"}
    if row.expires_at <= now:  # pending or approved but never fetched: the token has expired
        return {"status": "notfound"}
    if row.status == "pending":
        return {"status": "pending"}
    if not await sys.db.run(claim_enrolment, row.id):
        return {"status": "notfound"}  # another poll got it first (one certificate per request)
    serial, cert_pem, key_pem = await sys.handle.issue_agent_certificate(
        [row.fqdn, row.ip_address], row.host_id,
        audit=lambda s: audit.entry(
            "system", "certificate.issue", f"certificate:{s:x}",
            after={"names": [row.fqdn, row.ip_address], "host_id": row.host_id,
                   "enrolment_id": row.id},
        ),
    )  # fmt: skip
    await sys.db.run(deliver_enrolment, row.id, serial)
    if row.host_id is not None:
        sys.handle.refresh([row.host_id])
    answer: dict[str, Any] = {
        "status": "approved",
        "ca_crt": sys.handle.root_ca_pem(),
        "server_crt": cert_pem,
        "server_key": key_pem,
        "crl_pem": (await sys.handle.crl_pem()).decode(),
    }
    distro = distro_id(row.os_details)
    repo = await sys.db.run(repo_config, distro) if distro else None
    if repo is not None:
        answer["repo_config"] = repo
    return answer


def distro_id(os_details: dict[str, Any]) -> str:
    """The os-release ID of an agent's distribution. The agent (identity.rs get_os_details)
    sends ``distro`` = os-release NAME ("Ubuntu", "Debian GNU/Linux", "Rocky Linux"), ``version``,
    ``id_like``, ``codename``, ``kernel``; an explicit ``id`` wins when some agent sends one."""
    explicit = str(os_details.get("id") or os_details.get("distro_id") or "").strip().lower()
    if explicit:
        return explicit
    name = str(os_details.get("distro") or os_details.get("name") or "").strip().lower()
    for prefix, known in _DISTRO_NAMES:
        if name.startswith(prefix):
            return known
    first = name.split(" ", 1)[0]
    return first if first.replace("-", "").replace(".", "").isalnum() else ""


_DISTRO_NAMES = (  # os-release NAME prefix (lower case) → ID
    ("ubuntu", "ubuntu"), ("debian", "debian"), ("linux mint", "linuxmint"),
    ("rocky", "rocky"), ("almalinux", "almalinux"), ("red hat", "rhel"),
    ("centos", "centos"), ("fedora", "fedora"), ("oracle linux", "ol"),
    ("alpine", "alpine"), ("arch", "arch"), ("opensuse", "opensuse-leap"),
    ("sles", "sles"), ("suse linux enterprise", "sles"), ("amazon linux", "amzn"),
)  # fmt: skip


async def queue(sys: System, who: Principal, *, pending_only: bool = True) -> list[EnrolmentRow]:
    require(who, Action.MANAGE_PKI)
    return await sys.db.run(lambda conn: list_enrolments(conn, pending_only=pending_only))


async def _pending(sys: System, enrolment_id: int) -> EnrolmentRow:
    try:
        row = await sys.db.run(get_enrolment, enrolment_id)
    except NotFound:
        raise Missing(f"no enrolment request {enrolment_id}") from None
    if row.status != "pending" or row.expires_at <= dt.datetime.now(dt.UTC):
        state = row.status if row.status != "pending" else "expired"
        raise AlreadyExists("id", f"enrolment request {enrolment_id} is {state}, not pending")
    return row


async def approve(
    sys: System, who: Principal, enrolment_id: int, group: str | None = None
) -> EnrolmentRow:
    """Register the host (address = the agent's IP; display name = its FQDN) and approve. A
    renewal (the machine's host is still registered) approves without registering again."""
    require(who, Action.MANAGE_PKI)
    row = await _pending(sys, enrolment_id)
    return await _approve(sys, row, group, who.username)


async def _approve(
    sys: System, row: EnrolmentRow, group: str | None, decided_by: str
) -> EnrolmentRow:
    actor = "system" if decided_by == "auto-approval" else f"user:{decided_by}"
    host_id = await sys.db.run(enrolled_host, row.machine_id)
    if host_id is None:
        host = await sys.handle.register_host(
            row.ip_address, display_name=row.fqdn, groups=[group] if group else [],
            audit=lambda r: audit.entry(actor, "host.add", f"host:{r.id}",
                                        after=audit.host_view(r),
                                        detail=f"enrolment {row.id}"),
        )  # fmt: skip
        host_id = host.id
    try:
        return await audit.audited(
            sys,
            audit.entry(actor, "enrolment.approve", f"enrolment:{row.id}",
                        after={"fqdn": row.fqdn, "machine_id": row.machine_id,
                               "host_id": host_id, "group": group},
                        detail=decided_by),
            lambda conn: decide_enrolment(
                conn, row.id, approve=True, decided_by=decided_by, group_name=group,
                host_id=host_id,
            ),
        )  # fmt: skip
    except Conflict as exc:
        raise AlreadyExists("id", str(exc)) from None


async def deny(sys: System, who: Principal, enrolment_id: int) -> EnrolmentRow:
    require(who, Action.MANAGE_PKI)
    await _pending(sys, enrolment_id)
    try:
        return await audit.audited(
            sys,
            audit.entry(who, "enrolment.deny", f"enrolment:{enrolment_id}"),
            lambda conn: decide_enrolment(
                conn, enrolment_id, approve=False, decided_by=who.username
            ),
        )
    except Conflict as exc:
        raise AlreadyExists("id", str(exc)) from None


__all__ = ["EnrolGate", "approve", "deny", "queue", "request", "status"]
