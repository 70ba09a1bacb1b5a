"""`patch-manager serve`: one process, one root nursery.

Start order (each child reports readiness through ``nursery.start``): storage (embedded cluster,
pool, migrations) → scheduler actor → Hypercorn. Shutdown is the reverse ladder: stop taking
requests (Hypercorn's graceful shutdown), cancel the actors, close the pool, stop PostgreSQL.
SIGHUP reloads the configuration; a second SIGINT/SIGTERM during shutdown exits at once.

The shutdown ladder (R-0.1), each rung logged: stop admitting work (the web listener closes,
the job coordinator stops, no actor starts a new job row) while in-flight requests get
``server.graceful_timeout_s`` and relay WebSockets are closed with a close frame; then the host
actors are stopped (their in-flight writes are shielded), the state sink flushes what is
queued, the pool closes and PostgreSQL stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette

import actors.snapshots
from actors import (
    AgentClient,
    ConnectionRamp,
    DatabaseDiscoveryStore,
    DatabaseJobStore,
    DatabaseSink,
    FleetHandle,
    FleetState,
    HealthState,
    HostDirectory,
    HostSnapshot,
    HostTarget,
    Phase,
    Scheduler,
)
from actors.agent_client import AgentTransport
from actors.certificates import CertificateService, CertificateTimings
from actors.notifier import Notifier
from actors.retention import RetentionTask
from ca import (
    AgentPeerPolicy,
    CAError,
    CertificateAuthority,
    Sealer,
    agent_client_context,
    passphrase_from,
    web_server_context,
)
from reports import ComplianceRules, Context, backfill, take_snapshot
from settings import Config, ConfigStore, PollingPolicy, effective_policy
from simulator import Fleet, FleetSpec, serve_control
from storage import (
    AuditEntry,
    Database,
    HostScope,
    count_users,
    create_user,
    get_user,
    host_count,
    insert_host,
    list_hosts,
    run_audited,
    set_password,
)
from storage.tokens import revoke_user_tokens
from web import Auth, WebListener, create_app, generate_password, serve_web
from web.mfa import new_secret, otpauth_uri
from web.tokens import Tokens

from . import logs
from .adapter import SystemAdapter
from .audit_cli import audit_config_reloads
from .paths import bootstrap_marker
from .runtime import Storage, open_storage, record_certificates

log = logging.getLogger(__name__)


def compliance_rules(config: Config) -> ComplianceRules:
    """The [compliance] settings as the rules of ``reports.compliance``; a host's patch interval
    is its effective polling policy in ``config`` (host name and group names from storage)."""
    c = config.compliance

    def interval_of(host: str, groups: tuple[str, ...]) -> int | None:
        return effective_policy(config, host, groups).policy.patch_interval_s

    return ComplianceRules(
        sla_days={"critical": c.critical_sla_days, "high": c.high_sla_days,
                  "medium": c.medium_sla_days, "low": c.low_sla_days},
        min_severity=c.min_severity,
        freshness_factor=c.freshness_factor,
        default_patch_interval_s=config.polling.patch_interval_s,
        waiver_warning_days=c.waiver_warning_days, interval_of=interval_of,
    )  # fmt: skip


def snapshot_task(
    config: Config, storage: Storage, handle: SystemAdapter
) -> actors.snapshots.SnapshotTask:
    """The daily compliance snapshots of the whole fleet, judged like the reports judge."""
    rules = compliance_rules(config)

    def context(at: dt.datetime) -> Context:
        return Context(storage.db, HostScope.everything(), rules, at)

    return actors.snapshots.SnapshotTask(
        lambda day, at: take_snapshot(context(at), day),
        lambda at: backfill(context(at), config.compliance.backfill_days),
        lambda: dt.datetime.now(dt.UTC),
    )


@dataclass(frozen=True)
class ServerInfo:
    urls: list[str]
    database: str
    ca_root: Path
    admin_password: str | None = None  # set only on the very first start
    admin_totp: str | None = None  # the demo admin's authenticator secret (demo only)


@dataclass(frozen=True)
class DemoSpec:
    count: int = 50
    time_scale: float = 0.05
    base_address: str = "127.77.0.1"
    profile: str = "small"  # simulator package lists (simulator.PROFILES)


async def register_demo_fleet(db: Database, fleet: Fleet) -> None:
    """Register every simulated agent not registered yet (groups by role, for the demo)."""

    def insert(conn: Any) -> int:
        known = {row.name for row in list_hosts(conn)}
        added = 0
        with conn.transaction():
            for agent in fleet.agents:
                if agent.address not in known:
                    role = agent.profile.hostname.rstrip("0123456789")
                    insert_host(conn, name=agent.address, address=agent.address, port=agent.port,
                                display_name=agent.profile.hostname, groups=[role])  # fmt: skip
                    added += 1
        return added

    added = await db.run(insert)
    if added:
        log.info("demo: registered %d simulated agents", added)


class UnknownUser(LookupError):
    """``reset_password`` of a user that does not exist (never created: a typo must not make
    a new admin)."""


async def reset_password(
    db: Database,
    auth: Auth,
    username: str = "admin",
    *,
    must_change: bool = False,
    actor: str = "system",
) -> str:
    """Give ``username`` a new random password (every session of it ends; ``must_change``:
    to be replaced at the next login); return it. Audited as ``actor`` (the command line passes
    ``cli:USER@HOST``). A missing user is ``UnknownUser``, except the bootstrap "admin" while
    no user exists at all, which is created as an admin."""
    password, _ = await reset_password_counted(
        db, auth, username, must_change=must_change, actor=actor
    )
    return password


async def reset_password_counted(
    db: Database,
    auth: Auth,
    username: str = "admin",
    *,
    must_change: bool = False,
    actor: str = "system",
) -> tuple[str, int]:
    """``reset_password``, also returning how many API tokens of the user it revoked."""
    keyed = db.audit_key is not None  # (benchmarks open a database without the audit key)
    if await db.run(get_user, username) is None:
        users: int = await db.run(count_users)
        if username != "admin" or users:
            raise UnknownUser(f"no user named {username!r}")
    password = generate_password()
    hashed = await auth.hash_password(password)
    revoked = 0
    if await db.run(get_user, username) is None:
        await run_audited(
            db,
            AuditEntry(actor, "user.create", f"user:{username}", after={"role": "admin"})
            if keyed
            else None,
            lambda c: create_user(c, username, hashed, "admin", must_change_password=must_change),
        )
    else:
        user = await db.run(get_user, username)
        assert user is not None

        def reset(c: Any) -> int:  # as the web's reset: every API token of the user goes too
            set_password(c, username, hashed, must_change=must_change)
            return revoke_user_tokens(c, user.id, by=actor)

        revoked = await run_audited(
            db,
            (
                lambda revoked: AuditEntry(
                    actor,
                    "user.password.reset",
                    f"user:{username}",
                    after={"tokens_revoked": revoked},
                )  # fmt: skip
            )
            if keyed
            else None,
            reset,
        )
    return password, revoked


async def demo_totp(db: Database, auth: Auth, username: str = "admin") -> str:
    """Enrol a fresh authenticator-app secret for the demo's admin (replacing any factor it
    had); return the secret."""
    user = await db.run(get_user, username)
    assert user is not None
    secret = new_secret()
    await auth.mfa.reset(user.id, "demo")
    await auth.mfa.enrol_known_totp(user.id, secret)
    return secret


async def bootstrap_admin(db: Database, auth: Auth, marker: Path | None = None) -> str | None:
    """Create the ``admin`` account on first start; return its one-time password (to be
    replaced at the first login). ``marker`` (``paths.bootstrap_marker``) is written before the
    account and removed by whoever shows the password: while it exists and the account still
    has its one-time password, every start sets and returns a new one (a first start that
    failed after creating the account, e.g. on a port in use, never showed its password)."""
    if await db.run(count_users):
        if marker is None or not marker.exists():
            return None
        admin = await db.run(get_user, "admin")
        if admin is None or not admin.must_change_password:
            marker.unlink(missing_ok=True)  # chosen or reset meanwhile
            return None
        log.warning("the bootstrap account's password was never shown: a new one-time password"
                    " is shown on stdout")  # fmt: skip
        return await reset_password(db, auth, "admin", must_change=True)
    if marker is not None:
        marker.touch()
    password = generate_password()
    hashed = await auth.hash_password(password)
    await db.run(lambda c: create_user(c, "admin", hashed, "admin", must_change_password=True))
    log.warning("created the bootstrap account 'admin' (password shown once on stdout)")
    return password


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
class _Service:
    """A child task that can be stopped on its own (one rung of the shutdown ladder)."""

    scope: trio.CancelScope
    done: trio.Event

    async def stop(self, timeout: float) -> bool:
        """Cancel it and wait at most ``timeout`` seconds; True if it ended in time."""
        self.scope.cancel()
        with trio.move_on_after(timeout):
            await self.done.wait()
        return self.done.is_set()


async def _start_service(nursery: trio.Nursery, run: Callable[..., Any]) -> _Service:
    service = _Service(trio.CancelScope(), trio.Event())

    async def supervised(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with service.scope:
                await run(task_status=task_status)
        finally:
            service.done.set()

    await nursery.start(supervised)
    return service


RESTART_DELAYS_S = (1.0, 5.0, 30.0, 60.0, 300.0)  # a supervised task's restarts, then every 300 s
HEALTHY_RUN_S = 600.0  # a task that ran this long before failing starts the delays afresh


async def _supervised(
    name: str,
    run: Callable[..., Any],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run`` (a task for ``nursery.start``) for as long as the server runs: when it fails
    (or returns), log it with the traceback and start it again after ``RESTART_DELAYS_S``; it
    never ends the server. Started once the first start succeeded or failed (a failing first
    start does not hold the server back). Cancellation is never caught."""
    started = False
    failures = 0
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run)
                if not started:
                    started = True
                    task_status.started()
            problem = "ended"
        except Exception:
            problem = "failed"
        if trio.current_time() - began >= HEALTHY_RUN_S:
            failures = 0
        delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
        failures += 1
        if problem == "failed":
            log.exception("%s failed; restarting it in %g s", name, delay)
        else:
            log.error("%s ended; restarting it in %g s", name, delay)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(delay)


async def _close_relay(app: Any, timeout: float) -> None:
    relay = getattr(app.state, "relay", None)
    if relay is not None:
        closed = await relay.close_all(timeout)
        log.info("shutdown: %d relay WebSocket(s) closed with a close frame", closed)


@dataclass
class ActorSystem:
    scheduler: Scheduler
    fleet: FleetState
    sink: DatabaseSink
    handle: FleetHandle
    ramp: ConnectionRamp  # the fleet-wide limit on agent connections being opened
    certificates: CertificateService  # renewal, CRL re-signing, refused agent certificates
    retention: RetentionTask | None = None  # the daily pruning


# Start-up is logged until every host's first health poll: the banner waits for it (at most this).
STARTUP_SETTLE_S = 10.0
_NO_FIRST_POLL = (Phase.PAUSED, Phase.REFUSED, Phase.FAILED)


async def wait_first_polls(
    db: Database, fleet: FleetState, limit_s: float = STARTUP_SETTLE_S
) -> None:
    """Wait (at most ``limit_s``) until the actor of every registered host has finished its
    first health poll (or failed it, or does not poll), so that the banner printed next is not
    followed by a screenful of start-up lines (issue 16: the one-time password scrolled away)."""
    expected = await db.run(host_count)

    def settled(snapshots: list[HostSnapshot]) -> bool:
        return len(snapshots) >= expected and all(
            s.health is not HealthState.PENDING or s.last_error or s.phase in _NO_FIRST_POLL
            for s in snapshots
        )

    with trio.move_on_after(limit_s):
        await fleet.wait_until(settled)


def bootstrap_token(env_name: str) -> str:
    """The enrolment bootstrap token from ``env_name`` ("" when not configured); a configured
    variable that is unset or empty is an error, never "no token needed"."""
    if not env_name:
        return ""
    value = os.environ.get(env_name, "")
    if not value:
        raise CAError(f"pki.bootstrap_token_env names {env_name}, which is not set or empty")
    return value


def build_actor_system(
    store: ConfigStore, storage: Storage, ca: CertificateAuthority
) -> ActorSystem:
    """Wire the scheduler, its host actors' ports and the handle the web layer uses."""
    policy = AgentPeerPolicy(not_agent=ca.own_serials())
    ssl_context = agent_client_context(
        ca.root_cert_path, ca.client_cert_path, ca.client_key_path, policy
    )
    ramp = ConnectionRamp.for_this_machine(store.current.agents.max_new_connections)
    # One agent transport for every host: one httpx client, a connection pool per host.
    transport = AgentTransport(ssl_context, ramp=ramp)

    def agent_factory(target: HostTarget, policy: PollingPolicy) -> AgentClient:
        return AgentClient(
            target.name,
            target.address,
            ssl_context,
            port=target.port,
            request_timeout=policy.request_timeout_s,
            connect_timeout=policy.connect_timeout_s,
            max_connections=policy.max_connections,
            transport=transport,
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
        # The owner id of each start is kept next to the CA: a restart resumes its
        # predecessor's rows at once, a second process on this machine waits for their leases.
        job_store=DatabaseJobStore(storage.db, owner_file=ca.directory.parent / "job-owner"),
    )
    pki = store.current.pki
    certificates = CertificateService(
        ca, storage.db, client_context=ssl_context, policy=policy,
        timings=CertificateTimings(renew_ratio=pki.renew_ratio, crl_every_s=pki.crl_interval_s),
        enrolment=(pki.enrol_token_hours, pki.enrol_rate_s),
        auto_approval=(pki.auto_approve_cidrs, bootstrap_token(pki.bootstrap_token_env),
                       pki.auto_approve_group),
    )  # fmt: skip
    retention = RetentionTask.for_database(
        storage.db,
        lambda: store.current.retention.operational_days,
        lambda: store.current.retention.audit_days,
    )
    return ActorSystem(
        scheduler, fleet, sink, FleetHandle(scheduler, fleet, storage.db), ramp, certificates,
        retention,
    )  # fmt: skip


def build_web(
    config: Config, data_dir: Path, storage: Storage, system: ActorSystem, ca: CertificateAuthority
) -> tuple[Auth, Starlette]:
    """The web's authentication and application. Everything the web does (sessions, pages, API,
    relay, tokens, and the work it starts through the handle: registering and removing hosts,
    jobs, discovery, certificates) uses the web's own pool (``storage.web``), never waiting
    behind the actors' ingest writes on theirs."""
    auth = Auth(storage.web, secure_cookies=config.server.tls, settings=config.auth,
                sealer=Sealer.for_data_dir(data_dir))  # fmt: skip
    app = create_app(
        SystemAdapter(storage, system, ca),
        storage.web,
        auth=auth,
        max_body_bytes=config.server.max_body_bytes,
        compliance=compliance_rules(config),
        operators_see_ungrouped=config.auth.operators_see_ungrouped,
        sealer=Sealer.for_data_dir(data_dir),  # the OIDC client secret (web.sso)
        webauthn_rp_id=config.auth.webauthn_rp_id,
        webauthn_origin=config.auth.webauthn_origin,
        tokens=Tokens(
            storage.web,
            Sealer.for_data_dir(data_dir),
            operators_see_ungrouped=config.auth.operators_see_ungrouped,
            max_days=config.auth.token_max_days,
        ),
    )
    return auth, app


def notifier_for(
    storage: Storage, ca: CertificateAuthority, data_dir: Path, config: Config
) -> Notifier:
    """The e-mail sender: the SMTP password unsealed with the data directory's sealing key;
    the server's certificate checked against the system's roots and our own CA."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca.root_cert_path))
    return Notifier(
        storage.db,
        sealer=Sealer.for_data_dir(data_dir),
        ssl_context=context,
        see_ungrouped=config.auth.operators_see_ungrouped,
    )


def _web_listener(
    config: Config, ca: CertificateAuthority, bind: str | None, system: ActorSystem
) -> WebListener:
    tls = config.server.tls
    context = web_server_context(ca.web_cert_path, ca.web_key_path) if tls else None
    system.certificates.web_context = context  # a renewed web certificate is loaded into it
    return WebListener(
        bind=bind or config.server.bind,
        certfile=ca.web_cert_path if tls else None,
        keyfile=ca.web_key_path if tls else None,
        graceful_timeout_s=config.server.graceful_timeout_s,
        request_timeout_s=config.server.request_timeout_s,
        max_connections=config.server.max_connections,
        max_body_bytes=config.server.max_body_bytes,
        ssl_context=context,
    )


async def run_server(
    store: ConfigStore,
    data_dir: Path,
    *,
    bind: str | None = None,
    on_ready: Callable[[ServerInfo], None] | None = None,
    demo: DemoSpec | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or cancellation). With ``demo``, also serve a simulated fleet
    in the same nursery, register it, and set a fresh admin password every start."""
    config = store.current
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    web_names = [*config.server.hostnames, *config.server.ip_addresses]
    passphrase = passphrase_from(config.pki.ca_passphrase_env, config.pki.ca_passphrase_file)
    ca, created = await trio.to_thread.run_sync(
        lambda: CertificateAuthority.init(
            data_dir / "ca", web_names=web_names, passphrase=passphrase
        )
    )
    stop = trio.Event()
    storage: Storage | None = None

    def cluster_pid() -> int | None:
        return storage.cluster.pid if storage and storage.cluster else None

    async with trio.open_nursery() as outer:
        outer.start_soon(_watch_signals, store, stop, cluster_pid)
        fleet = None
        if demo is not None:
            spec = FleetSpec(count=demo.count, time_scale=demo.time_scale,
                             base_address=demo.base_address, profile=demo.profile)  # fmt: skip
            fleet = Fleet(data_dir / "ca", data_dir / "simulator", spec)
            await outer.start(fleet.run)
            await outer.start(serve_control, fleet, data_dir / "simulator.sock")
        async with open_storage(outer, config, data_dir, web_pool=True) as storage:
            await record_certificates(storage.db, created)
            system = build_actor_system(store, storage, ca)
            auth, app = build_web(config, data_dir, storage, system, ca)
            admin_password = await bootstrap_admin(storage.db, auth, bootstrap_marker(data_dir))
            admin_totp = None
            if fleet is not None:
                await register_demo_fleet(storage.db, fleet)
                # The demo's printed password and authenticator secret lead straight to the
                # dashboard (no forced change, no enrolment); `serve` never does this.
                admin_password = await reset_password(storage.db, auth)
                admin_totp = await demo_totp(storage.db, auth)
            # The sender exists before the web serves: the page's test message and outbox
            # find it from the first request.
            notifier = notifier_for(storage, ca, data_dir, config)
            app.state.notifier = notifier
            async with trio.open_nursery() as inner:
                sink = await _start_service(inner, system.sink.run)
                actors = await _start_service(inner, system.scheduler.run)
                await inner.start(system.certificates.run)
                web_stopped = trio.Event()
                urls = await inner.start(_started_web, app, _web_listener(config, ca, bind, system),
                                         stop, web_stopped)  # fmt: skip
                inner.start_soon(store.watch_files)
                snapshots = snapshot_task(config, storage, SystemAdapter(storage, system, ca))
                await inner.start(snapshots.run)
                if system.retention is not None:
                    await inner.start(_supervised, "retention", system.retention.run)
                inner.start_soon(auth.prune_periodically)
                inner.start_soon(logs.follow_config, store)
                inner.start_soon(audit_config_reloads, store, storage.db)
                await inner.start(_supervised, "notifications", notifier.run)
                await wait_first_polls(storage.db, system.fleet)  # the banner comes after
                if on_ready is not None:
                    on_ready(ServerInfo(urls, storage.description, ca.root_cert_path,
                                        admin_password, admin_totp))  # fmt: skip
                await stop.wait()
                system.scheduler.stop_admitting()
                log.info("shutdown: no new work admitted; in-flight requests finishing")
                async with trio.open_nursery() as closing:
                    closing.start_soon(_close_relay, app, config.server.graceful_timeout_s)
                    with trio.move_on_after(config.server.graceful_timeout_s + 2):
                        await web_stopped.wait()
                stopped = await actors.stop(timeout=10)
                log.info("shutdown: host actors stopped%s", "" if stopped else " (timed out)")
                await sink.stop(timeout=10)
                states, transitions = system.sink.queued()
                log.info("shutdown: host states flushed (%d state(s), %d transition(s) left)",
                         states, transitions)  # fmt: skip
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
    if info.admin_password:
        print(f"  log in as admin with password {info.admin_password}", flush=True)
        print("  (shown only now; `patch-manager reset-password` sets a new one)", flush=True)
    if info.admin_totp:
        print(f"  authenticator secret (TOTP) {info.admin_totp}", flush=True)
        print(f"  add it to an authenticator app: {otpauth_uri(info.admin_totp, 'admin')}",
              flush=True)  # fmt: skip
        print(f"  or print the current code: python -c \"import pyotp; "
              f"print(pyotp.TOTP('{info.admin_totp}').now())\"", flush=True)  # fmt: skip
