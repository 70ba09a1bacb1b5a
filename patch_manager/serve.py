"""`patch-manager serve`: one process, one root nursery.

Start order (each child reports readiness through ``nursery.start``): storage (embedded cluster,
pool, migrations) → scheduler actor → Hypercorn. Shutdown is the reverse ladder: stop taking
requests (Hypercorn's graceful shutdown), cancel the actors, close the pool, stop PostgreSQL.
SIGHUP reloads the configuration; a second SIGINT/SIGTERM during shutdown exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from actors import (
    AgentClient,
    DatabaseDiscoveryStore,
    DatabaseSink,
    FleetHandle,
    FleetState,
    HostDirectory,
    HostTarget,
    Scheduler,
)
from ca import CertificateAuthority, agent_client_context
from settings import Config, ConfigStore, PollingPolicy
from storage import ClusterState
from web import HealthReport, WebListener, create_app, serve_web

from . import __version__
from .runtime import Storage, open_storage, record_certificates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    urls: list[str]
    database: str
    ca_root: Path


class SystemAdapter:
    """The ``web.SystemHandle`` implementation: what the web layer may ask of the system."""

    def __init__(self, storage: Storage, scheduler: Scheduler) -> None:
        self.storage = storage
        self.scheduler = scheduler
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


async def _watch_signals(
    store: ConfigStore, stop: trio.Event, cluster_pid: Callable[[], int | None]
) -> None:
    first_at = 0.0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading configuration")
                store.reload()
            elif not stop.is_set():
                log.info("%s: shutting down", name)
                first_at = trio.current_time()
                stop.set()
            elif trio.current_time() - first_at > 0.5:
                # (A signal sent to the whole process group arrives twice within a moment; only
                # a deliberate second one forces the exit.)
                log.error("second %s during shutdown: exiting now", name)
                if (pid := cluster_pid()) is not None:
                    os.kill(pid, signal.SIGQUIT)  # immediate shutdown, no orphaned server
                os._exit(1)


@dataclass
class ActorSystem:
    scheduler: Scheduler
    fleet: FleetState
    sink: DatabaseSink
    handle: FleetHandle


def build_actor_system(
    store: ConfigStore, storage: Storage, ca: CertificateAuthority
) -> ActorSystem:
    """Wire the scheduler, its host actors' ports and the handle the web layer uses."""
    ssl_context = agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path)

    def agent_factory(target: HostTarget, policy: PollingPolicy) -> AgentClient:
        return AgentClient(
            target.name,
            target.address,
            ssl_context,
            port=target.port,
            request_timeout=policy.request_timeout_s,
            connect_timeout=policy.connect_timeout_s,
            max_connections=policy.max_connections,
        )

    fleet = FleetState()
    sink = DatabaseSink(storage.db)
    scheduler = Scheduler(
        config=store,
        directory=HostDirectory(storage.db),
        agent_factory=agent_factory,
        sink=sink,
        fleet=fleet,
        ssl_context=ssl_context,
        discovery_store=DatabaseDiscoveryStore(storage.db),
    )
    return ActorSystem(scheduler, fleet, sink, FleetHandle(scheduler, fleet, storage.db))


def _web_listener(config: Config, ca: CertificateAuthority, bind: str | None) -> WebListener:
    tls = config.server.tls
    return WebListener(
        bind=bind or config.server.bind,
        certfile=ca.web_cert_path if tls else None,
        keyfile=ca.web_key_path if tls else None,
        graceful_timeout_s=config.server.graceful_timeout_s,
    )


async def run_server(
    store: ConfigStore,
    data_dir: Path,
    *,
    bind: str | None = None,
    on_ready: Callable[[ServerInfo], None] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or cancellation)."""
    config = store.current
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    web_names = [*config.server.hostnames, *config.server.ip_addresses]
    ca, created = await trio.to_thread.run_sync(
        lambda: CertificateAuthority.init(data_dir / "ca", web_names=web_names)
    )
    stop = trio.Event()
    storage: Storage | None = None

    def cluster_pid() -> int | None:
        return storage.cluster.pid if storage and storage.cluster else None

    async with trio.open_nursery() as outer:
        outer.start_soon(_watch_signals, store, stop, cluster_pid)
        async with open_storage(outer, config, data_dir) as storage:
            await record_certificates(storage.db, created)
            system = build_actor_system(store, storage, ca)
            app = create_app(SystemAdapter(storage, system.scheduler))
            async with trio.open_nursery() as inner:
                await inner.start(system.sink.run)
                await inner.start(system.scheduler.run)
                web_stopped = trio.Event()
                urls = await inner.start(_started_web, app, _web_listener(config, ca, bind),
                                         stop, web_stopped)  # fmt: skip
                inner.start_soon(store.watch_files)
                if on_ready is not None:
                    on_ready(ServerInfo(urls, storage.description, ca.root_cert_path))
                await stop.wait()
                with trio.move_on_after(config.server.graceful_timeout_s + 2):
                    await web_stopped.wait()
                inner.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    log.info("stopped")


async def _started_web(
    app: object,
    listener: WebListener,
    stop: trio.Event,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await serve_web(app, listener, stop.wait, task_status=task_status)  # type: ignore[arg-type]
    finally:
        stopped.set()


def print_banner(info: ServerInfo) -> None:
    url = info.urls[0].replace("0.0.0.0", "127.0.0.1") + "/"
    print(f"Linux Patch Manager is running at {url}", flush=True)
    print(f"  database: {info.database}", flush=True)
    print(f"  root CA:  {info.ca_root} (import it into your browser to trust the UI)", flush=True)
    sys.stdout.flush()
