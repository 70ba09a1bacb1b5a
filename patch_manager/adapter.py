"""The composition root's adapter: the actor system seen as the web layer's ``SystemHandle``.

This is the one place where the actor layer's typed exceptions are translated into the web
layer's (``web.handle``), so that neither package imports the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from actors import (
    DiscoveryBusy,
    DiscoveryError,
    FleetHandle,
    HostAlreadyRegistered,
    RegistrationError,
    Scan,
)
from ca import CAError, CertificateAuthority, CertKind
from storage import AuditArg, ClusterState, Database, HostRow, record_certificate, run_audited
from web import AlreadyExists, HandleError, HealthReport, InvalidInput, TooBusy

from . import __version__
from .runtime import Storage

if TYPE_CHECKING:
    from .serve import ActorSystem


class SystemAdapter(FleetHandle):
    """The ``web.SystemHandle`` implementation: the actor system's handle plus the health
    check and the root certificate, which need the storage and the CA."""

    def __init__(self, storage: Storage, system: ActorSystem, ca: CertificateAuthority) -> None:
        # The work the web starts through the handle (register/remove hosts, jobs, discovery,
        # certificates) uses the web's pool (the actors' when there is none): never behind
        # the actors' ingest writes.
        super().__init__(system.scheduler, system.fleet, storage.web)
        self.storage = storage
        self.scheduler = system.scheduler
        self.ca = ca
        self.certificates = system.certificates
        self.retention = system.retention
        self.started = time.monotonic()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["certificate_expiry_s"] = self.certificates.expiry()
        m["agent_certificates_refused"] = self.certificates.policy.refused_handshakes
        if self.retention is not None:
            r = self.retention.statistics()
            m["retention"] = {
                "runs": r.runs, "failures": r.failures, "deleted_total": dict(r.deleted_total),
                "last_run_ts": r.last_run_at.timestamp() if r.last_run_at else None,
                "last_duration_s": r.last_duration_s,
            }  # fmt: skip
        return m

    async def health(self) -> HealthReport:
        cluster = self.storage.cluster
        pools: dict[str, str] = {}
        if cluster is not None and cluster.state is not ClusterState.READY:
            db_ok = False  # restarting: do not wait on the pools
        else:
            # Both pools at once. The actors' pool may be "busy" (every connection checked out
            # by ingest; decided without waiting for one): that is not an outage while the
            # web's own pool answers. Without a web pool the web shares the actors' pool.
            async def probe(name: str, db: Database, timeout: float) -> None:
                pools[name] = await db.probe(timeout=timeout)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe, "actors", self.storage.db, 2.0)
                if self.storage.web_db is not None:
                    nursery.start_soon(probe, "web", self.storage.web_db, 2.0)
            web = pools.get("web", pools["actors"])
            actors_ok = pools["actors"] == "ok" or (pools["actors"] == "busy" and web == "ok")
            db_ok = web == "ok" and actors_ok
        age = self.scheduler.heartbeat_age()
        if age is None:
            sched = "stopped"
        elif age > 5 * self.scheduler.tick:
            sched = "stalled"
        else:
            sched = "ok"
        details: dict[str, object] = {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "scheduler_heartbeat_age_s": None if age is None else round(age, 3),
            "host_actors": len(self.scheduler.hosts),
        }
        if pools:
            details["database_pools"] = dict(sorted(pools.items()))
        if cluster is not None:
            details["embedded_postgres"] = {"state": cluster.state.value,
                                            "restarts": cluster.restarts}  # fmt: skip
        return HealthReport(
            ok=db_ok and sched == "ok",
            database="ok" if db_ok else "down",
            scheduler=sched,
            details=details,
        )

    # -- the actor layer's exceptions, typed for the web layer -------------------------------

    async def register_host(
        self,
        name: str,
        *,
        display_name: str = "",
        groups: Sequence[str] = (),
        port: int | None = None,
        audit: AuditArg = None,
    ) -> HostRow:
        try:
            return await super().register_host(
                name, display_name=display_name, groups=groups, port=port, audit=audit
            )
        except RegistrationError as exc:
            raise registration_refused(exc) from None

    async def register_found(
        self, scan_id: int, addresses: Sequence[str], *, audit: AuditArg = None
    ) -> list[HostRow]:
        try:
            return await super().register_found(scan_id, addresses, audit=audit)
        except RegistrationError as exc:
            raise registration_refused(exc) from None

    async def start_discovery(self, cidr: str, *, audit: AuditArg = None) -> Scan:
        try:
            return await super().start_discovery(cidr, audit=audit)
        except DiscoveryBusy as exc:
            raise TooBusy("cidr", str(exc)) from None
        except DiscoveryError as exc:
            raise InvalidInput("cidr", str(exc)) from None

    async def rollback(
        self,
        job_id: int,
        host_ids: Sequence[int] | None = None,
        *,
        created_by: str = "",
        audit: AuditArg = None,
    ) -> int:
        try:
            return await super().rollback(job_id, host_ids, created_by=created_by, audit=audit)
        except ValueError as exc:  # nothing to roll back (the handle's documented refusal)
            raise InvalidInput("host_ids", str(exc)) from None

    def root_ca_pem(self) -> str:
        return self.ca.root_pem

    async def crl_pem(self) -> bytes:
        return await trio.Path(self.ca.crl_path).read_bytes()

    def certificate_expiry(self) -> dict[str, float]:
        return self.certificates.expiry()

    async def renew_certificate(self, kind: str, *, audit: AuditArg = None) -> str:
        try:
            cert_kind = CertKind(kind)
        except ValueError:
            raise InvalidInput("kind", f"{kind!r} is not a certificate kind") from None
        try:
            return (await self.certificates.renew(cert_kind, audit=audit)).serial_hex
        except CAError as exc:
            raise InvalidInput("kind", str(exc)) from None

    async def certificates_revoked(self) -> None:
        await self.certificates.revoked()

    def enrolment_settings(self) -> tuple[int, float]:
        return self.certificates.enrolment

    def auto_approval(self) -> tuple[tuple[str, ...], str, str]:
        return self.certificates.auto_approval

    async def issue_agent_certificate(
        self, names: Sequence[str], host_id: int | None, *, audit: AuditArg = None
    ) -> tuple[int, str, str]:
        try:
            issued = await trio.to_thread.run_sync(self.ca.issue_agent, list(names))
        except CAError as exc:
            raise InvalidInput("names", str(exc)) from None
        r = issued.record

        def write(conn: Any) -> None:
            record_certificate(
                conn, serial=r.serial, kind=r.kind.value, subject=r.subject, sans=r.sans,
                not_before=r.not_before, not_after=r.not_after, cert_pem=r.cert_pem,
                host_id=host_id,
            )  # fmt: skip

        entry = audit(r.serial) if callable(audit) else audit
        await run_audited(self.storage.web, entry, write)
        return r.serial, r.cert_pem + self.ca.root_pem, issued.key_pem


def registration_refused(exc: RegistrationError) -> HandleError:
    if isinstance(exc, HostAlreadyRegistered):
        return AlreadyExists(exc.field, exc.message)
    return InvalidInput(exc.field, exc.message)
