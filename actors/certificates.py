"""The certificate service: keeps the manager's own certificates and the CRL from expiring.

One task started by the composition root. It

- renews the manager's agent client certificate and the web certificate once ``renew_ratio`` of
  their lifetime has passed (2/3 by default), loading the new pair into the *live* TLS contexts:
  new agent connections and new browser handshakes present the new certificate at once, and
  connections already open finish with the old one, which stays valid until it expires (the
  overlap; it is never revoked);
- re-signs the CRL every ``crl_every_s`` (daily; each CRL is valid 7 days) and at once after a
  revocation (``revoked()``);
- keeps the ``AgentPeerPolicy`` (serials the manager refuses from agents: revoked ones and every
  certificate not issued as an agent's) in step with the database, also for revocations made by
  the CLI in another process (``policy_every_s``);
- reports seconds to expiry of every certificate it owns and of the soonest-expiring agent
  certificate (newest per registered host, read with the policy) (``expiry()``, for /metrics and
  the dashboard) and logs a warning for any of its own past its renewal time and not renewed.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ca import (
    AgentPeerPolicy,
    CAError,
    CertificateAuthority,
    CertificateRecord,
    CertKind,
    reload_certificate,
    renewal_due,
)
from storage import (
    AuditArg,
    AuditEntry,
    Database,
    StorageError,
    record_certificate,
    refused_agent_serials,
    revoked_serials,
    run_audited,
    soonest_agent_expiry,
)

log = logging.getLogger(__name__)

RENEWED_KINDS = (CertKind.MANAGER_CLIENT, CertKind.WEB_SERVER)


@dataclass(frozen=True)
class CertificateTimings:
    renew_ratio: float = 2 / 3  # renew after this share of the lifetime
    crl_every_s: float = 86_400.0  # CRL re-signed this often (and at every revocation)
    check_every_s: float = 3_600.0  # renewal due-ness checked this often
    policy_every_s: float = 60.0  # refused agent serials re-read this often


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateService:
    def __init__(
        self,
        ca: CertificateAuthority,
        db: Database,
        *,
        client_context: ssl.SSLContext,
        policy: AgentPeerPolicy,
        timings: CertificateTimings | None = None,
        now: Callable[[], dt.datetime] = _utc_now,
        enrolment: tuple[int, float] = (24, 60.0),
        auto_approval: tuple[tuple[str, ...], str, str] = ((), "", ""),
    ) -> None:
        self.ca = ca
        self.db = db
        self.client_context = client_context
        self.web_context: ssl.SSLContext | None = None  # set when the web listener serves TLS
        self.policy = policy
        self.timings = timings or CertificateTimings()
        self.now = now
        # (hours an enrolment request stays valid, seconds between requests per address)
        self.enrolment = enrolment
        # (CIDRs, bootstrap token ("" = none required), group) of enrolment auto-approval
        self.auto_approval = auto_approval
        self.renewals = 0
        self.crl_signed = 0
        self._current: dict[CertKind, CertificateRecord] = {}
        self._own_serials: set[int] = set()  # every certificate of ours seen (never an agent's)
        self._crl_next_update: dt.datetime | None = None
        self._agent_expiry: dt.datetime | None = None  # soonest agent certificate (per host)
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._load_current()

    def _load_current(self) -> None:
        for kind in (CertKind.ROOT, *RENEWED_KINDS):
            self._current[kind] = self.ca.current(kind)
        self._crl_next_update = self.ca.crl_next_update()

    # -- what /metrics shows --------------------------------------------------------------
    def expiry(self) -> dict[str, float]:
        """Seconds until each certificate (and the CRL) expires, by kind."""
        now = self.now()
        out = {k.value: (r.not_after - now).total_seconds() for k, r in self._current.items()}
        if self._crl_next_update is not None:
            out["crl"] = (self._crl_next_update - now).total_seconds()
        if self._agent_expiry is not None:
            out["agent_server"] = (self._agent_expiry - now).total_seconds()
        return out

    def current(self, kind: CertKind) -> CertificateRecord:
        return self._current[kind]

    # -- actions --------------------------------------------------------------------------
    async def refresh_policy(self) -> None:
        revoked, not_agent = await self.db.run(refused_agent_serials)
        self._agent_expiry = await self.db.run(soonest_agent_expiry)
        self._own_serials |= {r.serial for r in self._current.values()}
        self.policy.update(revoked=revoked, not_agent={*not_agent, *self._own_serials})

    async def resign_crl(self) -> None:
        """Write a fresh CRL (nextUpdate 7 days) listing every revoked serial."""
        async with self._lock:
            revoked = await self.db.run(revoked_serials)
            now = self.now()
            await trio.to_thread.run_sync(lambda: self.ca.write_crl(revoked, now=now))
            self._crl_next_update = await trio.to_thread.run_sync(self.ca.crl_next_update)
            self.crl_signed += 1
        log.info("CRL re-signed (%d revoked certificate(s))", len(revoked))

    async def revoked(self) -> None:
        """Call after a revocation: the policy and the CRL follow at once."""
        await self.refresh_policy()
        await self.resign_crl()

    async def renew(self, kind: CertKind, *, audit: AuditArg = None) -> CertificateRecord:
        """Renew the manager's client or web certificate now and start using it. The new
        record is stored with ``audit``'s entry (a function of the new serial, an entry, or
        None: recorded as the system's renewal) in one transaction; the files on disk are
        already renewed and in use when that fails."""
        async with self._lock:
            issued = await trio.to_thread.run_sync(lambda: self.ca.renew(kind))
            record = issued.record
            if kind is CertKind.MANAGER_CLIENT:
                reload_certificate(self.client_context, self.ca.client_cert_path,
                                   self.ca.client_key_path)  # fmt: skip
            elif self.web_context is not None:
                reload_certificate(self.web_context, self.ca.web_cert_path, self.ca.web_key_path)
            old = self._current.get(kind)
            self._current[kind] = record
            self.renewals += 1
        try:
            await self._record(record, audit)
        finally:
            await self.refresh_policy()
        log.info(
            "renewed the %s certificate: serial %s valid until %s (the old one, %s, stays valid "
            "until %s for connections made with it)",
            kind.value, record.serial_hex, record.not_after.isoformat(),
            old.serial_hex if old else "-", old.not_after.isoformat() if old else "-",
        )  # fmt: skip
        return record

    async def _record(self, r: CertificateRecord, audit: AuditArg = None) -> None:
        def write(conn: Any) -> None:
            record_certificate(
                conn, serial=r.serial, kind=r.kind.value, subject=r.subject, sans=r.sans,
                not_before=r.not_before, not_after=r.not_after, cert_pem=r.cert_pem,
            )  # fmt: skip

        if audit is None:
            entry: AuditEntry | None = AuditEntry(
                "system", "certificate.renew", f"certificate:{r.serial_hex}",
                after={"kind": r.kind.value, "serial": r.serial_hex},
            )  # fmt: skip
        else:
            entry = audit(r.serial_hex) if callable(audit) else audit
        await run_audited(self.db, entry, write)

    async def _pick_up_files(self) -> None:
        """Use a certificate renewed on disk by another process (``patch-manager ca renew``)."""
        for kind in RENEWED_KINDS:
            on_disk = await trio.to_thread.run_sync(self.ca.current, kind)
            if on_disk.serial == self._current[kind].serial:
                continue
            if kind is CertKind.MANAGER_CLIENT:
                reload_certificate(self.client_context, self.ca.client_cert_path,
                                   self.ca.client_key_path)  # fmt: skip
            elif self.web_context is not None:
                reload_certificate(self.web_context, self.ca.web_cert_path, self.ca.web_key_path)
            self._current[kind] = on_disk
            log.info("now using the %s certificate %s renewed on disk", kind.value,
                     on_disk.serial_hex)  # fmt: skip
        await self.refresh_policy()

    async def renew_due(self) -> list[CertKind]:
        """Renew every certificate past its renewal time; returns the kinds renewed."""
        renewed: list[CertKind] = []
        async with self._lock:
            await self._pick_up_files()
        now = self.now()
        for kind in RENEWED_KINDS:
            record = self._current[kind]
            if now < renewal_due(record, self.timings.renew_ratio):
                continue
            try:
                await self.renew(kind)
                renewed.append(kind)
            except (CAError, OSError, ssl.SSLError) as exc:
                log.warning(
                    "the %s certificate %s expires in %.1f day(s) and could not be renewed: %s",
                    kind.value, record.serial_hex,
                    (record.not_after - now).total_seconds() / 86_400, exc,
                )  # fmt: skip
        return renewed

    def wake(self) -> None:
        self._wake.set()

    # -- the task -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.refresh_policy()
            await self.resign_crl()
            await self.renew_due()
        except (OSError, CAError, StorageError) as exc:  # retried on the schedule below
            log.warning("certificate service: %s", exc)
        task_status.started()
        t = self.timings
        next_crl = trio.current_time() + t.crl_every_s
        next_check = trio.current_time() + t.check_every_s
        next_policy = trio.current_time() + t.policy_every_s
        while True:
            with trio.move_on_at(min(next_crl, next_check, next_policy)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            try:
                if now >= next_policy:
                    next_policy = now + t.policy_every_s
                    await self.refresh_policy()
                if now >= next_check:
                    next_check = now + t.check_every_s
                    await self.renew_due()
                if now >= next_crl:
                    next_crl = now + t.crl_every_s
                    await self.resign_crl()
            except (
                OSError,
                CAError,
                StorageError,
            ) as exc:  # the database or the disk; try again next time
                log.warning("certificate service: %s", exc)
