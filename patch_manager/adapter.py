"""The composition root's adapter: the actor system seen as the web layer's ``SystemHandle``.

This is the one place where the actor layer's typed exceptions are translated into the web
layer's (``web.handle``), so that neither package imports the other.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from actors import FleetHandle
from ca import CertificateAuthority
from storage import ClusterState
from web import HealthReport

from . import __version__
from .runtime import Storage

if TYPE_CHECKING:
    from .serve import ActorSystem


class SystemAdapter(FleetHandle):
    """The ``web.SystemHandle`` implementation: the actor system's handle plus the health
    check and the root certificate, which need the storage and the CA."""

    def __init__(self, storage: Storage, system: ActorSystem, ca: CertificateAuthority) -> None:
        super().__init__(system.scheduler, system.fleet, storage.db)
        self.storage = storage
        self.scheduler = system.scheduler
        self.ca = ca
        self.started = time.monotonic()

    async def health(self) -> HealthReport:
        cluster = self.storage.cluster
        if cluster is not None and cluster.state is not ClusterState.READY:
            db_ok = False  # restarting: do not wait on the pool
        else:
            db_ok = await self.storage.db.ping(timeout=2.0)
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
        if cluster is not None:
            details["embedded_postgres"] = {"state": cluster.state.value,
                                            "restarts": cluster.restarts}  # fmt: skip
        return HealthReport(
            ok=db_ok and sched == "ok",
            database="ok" if db_ok else "down",
            scheduler=sched,
            details=details,
        )

    def root_ca_pem(self) -> str:
        return self.ca.root_pem
