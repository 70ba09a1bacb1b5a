"""One simulated Linux Patch API agent: its endpoints, job engine, WebSocket and reboots.

Behaviour follows agent-api.md (the real agent's source), quirks included: middleware order
(rate limit → duplicate headers → whitelist → route), text/plain framework errors, 405 for
unknown /api/v1 paths, one mutation at a time, admission refusals, jobs surviving restarts with
orphan recovery, WebSocket broadcast of every event to every client.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import math
import random
import re
import ssl
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .catalog import HostProfile, requires_reboot, severity_of
from .families import running_kernel
from .http import (
    Drop,
    Request,
    Response,
    WebSocketAccept,
    WebSocketSession,
    serve_connection,
    text,
)
from .model import (
    FAILURES,
    CommandFailure,
    Faults,
    Op,
    SimJob,
    St,
    classify,
    first_line,
    rfc3339,
    wall_now,
)
from .ratelimit import RateLimiter, Tier
from .routes import AdmissionError, error, route

log = logging.getLogger(__name__)

AGENT_VERSION = "2.6.12"
HISTORY_LIMIT = 500
EVENT_BUFFER = 256
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:~_-]{0,255}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CRITICAL = ("content-type", "authorization", "host")

# Durations in seconds before the time scale (agent-api.md §9).
TIMINGS: dict[str, tuple[float, float]] = {
    "install": (3, 30),
    "update": (5, 60),
    "remove": (3, 30),
    "refresh": (5, 60),
    "apply": (30, 300),
    "reboot_down": (30, 180),
    "restart_down": (2, 10),
    "shutdown": (2, 5),  # from `systemctl reboot` until the host stops answering
    "internal": (5, 60),
}


class SimAgent:
    """A simulated agent at ``address:port``. Run it with ``await nursery.start(agent.run)``.

    ``time_scale`` multiplies every simulated duration (0.01 = a hundred times faster).
    """

    def __init__(
        self,
        address: str,
        port: int,
        profile: HostProfile,
        contexts: Callable[[], tuple[ssl.SSLContext, ssl.SSLContext]],
        *,
        time_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.address = address
        self.port = port
        self.profile = profile
        self._contexts = contexts  # (normal, reject-everyone)
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.version = AGENT_VERSION
        self.boot_id = uuid.uuid4().hex
        self.booted_at = wall_now() - dt.timedelta(seconds=profile.uptime_seconds)
        self.pending_reboot = False
        self.last_cache_update = wall_now()
        self.jobs: dict[str, SimJob] = {}
        self.up = True
        self.reboot_reserved = False
        self.self_update_active = False
        self.requests_served = 0
        self.delayed_answers = 0  # job answers sent late (fault job_answer_delay_s, answer_gate)
        # tests: while set, an accepted job's answer waits until the event is set
        self.answer_gate: trio.Event | None = None
        self.ws_heartbeat = (5.0, 10.0)  # the real agent's ping interval and client timeout
        self.ws_refusal = 0  # tests: answer WebSocket upgrades with this HTTP status (0: accept)
        self.bad_job_ids = 0  # tests: the next N accepted jobs are answered with a bad job id
        self.reboot_job_late_s = 0.0  # tests: 2.5.5's separate reboot job appears this late
        self.slow_mutation_s = 0.0  # tests: the next mutation is handled this much later
        self.nul_text = False  # tests: NUL characters in the text of health and patch answers
        self.mutations: list[str] = []  # every mutating request received, in order (tests)
        self.send_cve_ids = False  # FleetSpec.cve_ids: the real agent sends [] (§3.10)
        self.on_mutation: Callable[[], None] = lambda: None
        self._limiter = RateLimiter.default()
        self._subscribers: set[trio.MemorySendChannel[str]] = set()
        self._sessions: set[WebSocketSession] = set()
        self._work = trio.Event()
        self._up_changed = trio.Event()
        self._listening = trio.Event()
        self._request_seen = trio.Event()
        self._serve_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    # -- configuration --------------------------------------------------------------------

    def set_faults(self, values: dict[str, Any]) -> None:
        was_down = self.faults.down
        self.faults.update(values)
        f = self.faults
        self._limiter = RateLimiter(
            Tier(f.read_per_minute, f.read_burst),
            Tier(f.destructive_per_minute, f.destructive_burst),
            enabled=f.rate_limit,
        )
        if f.down and not was_down:
            self._go_down()
        elif was_down and not f.down:
            self._come_up()

    def server_context(self) -> ssl.SSLContext:
        normal, reject = self._contexts()
        return reject if self.faults.tls_reject else normal

    def websocket_heartbeat(self) -> tuple[float, float]:
        return self.ws_heartbeat

    def stall_connections(self) -> bool:
        return self.faults.half_open

    def scaled(self, kind: str) -> float:
        low, high = TIMINGS[kind]
        return self.rng.uniform(low, high) * self.time_scale

    @property
    def uptime_seconds(self) -> int:
        return max(0, int((wall_now() - self.booted_at).total_seconds()))

    # -- serving ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._worker)
            started = False
            while True:
                if self.up:
                    with trio.CancelScope() as scope:
                        self._serve_scope = scope
                        listeners = await trio.open_tcp_listeners(self.port, host=self.address)
                        self.port = listeners[0].socket.getsockname()[1]
                        self._listening.set()
                        if not started:
                            started = True
                            task_status.started()
                        await trio.serve_listeners(partial(serve_connection, agent=self), listeners)
                    self._serve_scope = None
                elif not started:
                    started = True
                    task_status.started()
                await self._up_changed.wait()
                self._up_changed = trio.Event()

    async def wait_listening(self) -> None:
        """Wait until the agent accepts connections (again)."""
        await self._listening.wait()

    def _go_down(self) -> None:
        """Stop listening and drop every connection and WebSocket (no close frames)."""
        self.up = False
        self._listening = trio.Event()
        if self._serve_scope is not None:
            self._serve_scope.cancel()
        for session in list(self._sessions):
            session.abort()
        self._up_changed.set()

    def _come_up(self) -> None:
        self.up = True
        self._up_changed.set()

    def drop_websockets(self) -> int:
        sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        return len(sessions)

    async def restart(self, *, reboot: bool) -> None:
        """Simulate an agent restart (or a host reboot): down for a while, then orphan recovery."""
        self._go_down()
        await trio.sleep(self.scaled("reboot_down" if reboot else "restart_down"))
        if reboot:
            self.boot_id = uuid.uuid4().hex
            self.booted_at = wall_now()
            self.pending_reboot = False
            distro = self.profile.distro
            booted = running_kernel(distro, self.profile.installed) if distro else None
            self.profile.kernel = booted or self.profile.kernel
        self._recover_orphans(rebooted=reboot)
        self.reboot_reserved = False
        self.self_update_active = False
        if not self.faults.down:
            self._come_up()
            await self.wait_listening()

    def _recover_orphans(self, *, rebooted: bool) -> None:
        now = wall_now()
        for job in list(self.jobs.values()):
            if job.status.terminal:
                continue
            if job.internal:
                job.status, job.completed_at = St.CANCELLED, now
            elif job.status is St.REBOOTING:
                job.status, job.progress, job.completed_at = St.COMPLETED, 100, now
                job.message = "Reboot completed — agent restarted after patching"
            elif job.op is Op.SELF_UPDATE:
                job.status, job.progress, job.completed_at = St.COMPLETED, 100, now
                job.message = "Self-update completed — agent restarted into new version"
            else:
                code = "AGENT_REBOOTED" if rebooted else "AGENT_RESTARTED"
                why = "host reboot" if rebooted else "process restart"
                job.status, job.completed_at, job.error_code = St.FAILED, now, code
                job.error = f"Job interrupted by agent {why}"
                job.logs.append(job.error)
        self._work.set()

    # -- WebSocket --------------------------------------------------------------------------

    async def websocket_session(self, ws: WebSocketSession) -> None:
        send, receive = trio.open_memory_channel[str](EVENT_BUFFER)
        self._subscribers.add(send)
        self._sessions.add(ws)
        try:
            greeting = {"event": "connected", "job_id": "", "status": "connected", "progress": 0,
                        "message": f"WebSocket connected: {uuid.uuid4()}",
                        "timestamp": rfc3339(wall_now())}  # fmt: skip
            await ws.send_text(json.dumps(greeting))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_events, receive, ws)
                await ws.run(partial(self._on_ws_text, ws))
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the client went away
        finally:
            self._subscribers.discard(send)
            self._sessions.discard(ws)

    async def _forward_events(
        self, receive: trio.MemoryReceiveChannel[str], ws: WebSocketSession
    ) -> None:
        async for message in receive:
            await ws.send_text(message)

    async def _on_ws_text(self, ws: WebSocketSession, message: str) -> None:
        def reply(event: str, job_id: str, status: str, text_: str) -> str:
            return json.dumps({"event": event, "job_id": job_id, "status": status, "progress": 0,
                               "message": text_, "timestamp": rfc3339(wall_now())})  # fmt: skip

        try:
            data = json.loads(message)
            action = data["action"]
            if action not in ("subscribe", "unsubscribe"):
                raise ValueError(f"unknown variant `{action}`")
        except (ValueError, KeyError, TypeError) as exc:
            await ws.send_text(reply("error", "", "invalid_message", f"Invalid message: {exc}"))
            return
        job_id = str(data.get("job_id") or "all")
        if action == "subscribe":
            what = "all job events" if job_id == "all" else f"job: {job_id}"
            await ws.send_text(reply("subscribed", job_id, "subscribed", f"Subscribed to {what}"))
        else:
            await ws.send_text(reply("unsubscribed", job_id, "unsubscribed",
                                     f"Unsubscribed from job: {job_id}"))  # fmt: skip

    def _emit(self, job: SimJob) -> None:
        message = json.dumps(job.event())
        for channel in list(self._subscribers):
            if self.faults.lose_events and self.rng.random() < self.faults.lose_events:
                continue
            try:
                if self.faults.garbage_events:
                    channel.send_nowait('{"event": "job_status", "job_id": ')
                channel.send_nowait(message)
            except trio.WouldBlock:
                pass  # a lagging client silently loses events, like the real agent
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(channel)

    # -- job engine -------------------------------------------------------------------------

    def _set(self, job: SimJob, status: St, message: str | None = None) -> None:
        job.status = status
        if message is not None:
            job.logs.append(message)
        if status.terminal:
            job.completed_at = wall_now()
            if status is St.COMPLETED:
                job.progress = 100
        self._emit(job)

    def _add_job(self, job: SimJob) -> SimJob:
        self.jobs[job.job_id] = job
        while len(self.jobs) > HISTORY_LIMIT:
            oldest = next((j for j in self.jobs.values() if j.status.terminal), None)
            if oldest is None:
                break
            del self.jobs[oldest.job_id]
        self._emit(job)
        self._work.set()
        return job

    def _active(self) -> list[SimJob]:
        return [j for j in self.jobs.values() if not j.internal and j.status.active]

    def _wait(self) -> int:
        return self.faults.admission_retry_after_s

    def admit(self, job: SimJob) -> SimJob:
        """Admission for ordinary mutations (agent-api.md §4.3); raises AdmissionError."""
        if self.faults.degraded == "recovery":
            raise AdmissionError(error(409, "ADMISSION_FROZEN", "Admission frozen (recovery mode)",
                                       retryable=True, retry_after=self._wait()))  # fmt: skip
        if self.self_update_active:
            raise AdmissionError(error(409, "SELF_UPDATE_IN_PROGRESS",
                                       "A self-update is in progress", retryable=True,
                                       retry_after=self._wait()))  # fmt: skip
        if self.reboot_reserved:
            raise AdmissionError(error(409, "ADMISSION_FROZEN",
                                       "Admission frozen: reboot reserved", retryable=True,
                                       retry_after=self._wait()))  # fmt: skip
        if len(self._active()) >= self.faults.queue_depth:
            raise AdmissionError(error(429, "QUEUE_FULL",
                                       f"Job queue is full ({self.faults.queue_depth} jobs)",
                                       retryable=True, retry_after=self._wait()))  # fmt: skip
        return self._add_job(job)

    def admit_reboot(self, job: SimJob, *, force: bool, acknowledge: bool) -> SimJob:
        if self.reboot_reserved:
            raise AdmissionError(error(409, "REBOOT_BLOCKED", "A reboot is already reserved",
                                       details={"active_jobs": len(self._active())}))  # fmt: skip
        if self.self_update_active:
            raise AdmissionError(error(409, "SELF_UPDATE_IN_PROGRESS", "Self-update in progress"))
        if self.faults.degraded == "recovery":
            raise AdmissionError(error(409, "ADMISSION_CLOSED", "Admission closed"))
        running_mutation = any(j.status is St.RUNNING and j.op is not Op.REBOOT
                               for j in self._active())  # fmt: skip
        if force:
            if running_mutation and not acknowledge:
                raise AdmissionError(error(
                    409, "PACKAGE_DB_MUTATION_IN_PROGRESS", "A package operation is running",
                    details={"package_operation_in_progress": True}))  # fmt: skip
        elif self._active():
            raise AdmissionError(error(409, "REBOOT_BLOCKED", "Active jobs block the reboot",
                                       details={"active_jobs": len(self._active())}))  # fmt: skip
        if len(self._active()) >= self.faults.queue_depth:
            raise AdmissionError(error(409, "QUEUE_FULL", "Job queue is full", retryable=True))
        self._reserve_reboot()
        self._add_job(job)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_reboot, job)
        return job

    def _reserve_reboot(self) -> None:
        """Every other pending job (rollbacks included) fails at once (§3.4)."""
        self.reboot_reserved = True
        for other in self._active():
            if other.status is St.PENDING:
                other.error = "Cancelled: reboot reservation in progress"
                self._set(other, St.FAILED, other.error)

    async def _separate_reboot(self, delay_seconds: int) -> None:
        """2.5.5: the reboot job created after the patch job completed (``reboot_job_late_s``
        later in tests: a manager listing the jobs at once does not see it yet)."""
        if self.reboot_job_late_s:
            await trio.sleep(self.reboot_job_late_s)
        reboot = SimJob(Op.REBOOT, [], reboot_delay_seconds=delay_seconds)
        self._reserve_reboot()
        self._add_job(reboot)
        await self._run_reboot(reboot)

    async def _run_reboot(self, job: SimJob) -> None:
        self._set(job, St.REBOOTING, "Reboot command starting")
        minutes = (
            max(1, math.ceil(job.reboot_delay_seconds / 60)) if job.reboot_delay_seconds else 0
        )
        await trio.sleep(minutes * 60 * self.time_scale)
        # Let the answer that scheduled the reboot reach the client before the host goes down.
        await trio.sleep(max(0.05, self.scaled("shutdown")))
        await self.restart(reboot=True)

    async def _worker(self) -> None:
        """The single mutation slot: runs pending jobs one at a time, oldest first."""
        while True:
            job = next(
                (j for j in self.jobs.values() if j.status is St.PENDING and j.op is not Op.ROLLBACK
                 and j.op is not Op.REBOOT),
                None,
            )  # fmt: skip
            if job is None or not self.up:
                await self._work.wait()
                self._work = trio.Event()
                continue
            await self._execute(job)

    async def _execute(self, job: SimJob) -> None:
        self._set(job, St.RUNNING, "Job started")
        failure = self._planned_failure(job)
        try:
            if job.internal:
                await trio.sleep(self.scaled("internal"))
                self.last_cache_update = wall_now()
                self._set(job, St.COMPLETED)
                del self.jobs[job.job_id]
                return
            if job.op is Op.PATCH_APPLY:
                job.logs.append("Refreshing package cache...")
                await trio.sleep(self.scaled("refresh"))
                self.last_cache_update = wall_now()
                await trio.sleep(self.scaled("apply"))
            else:
                await trio.sleep(self.scaled(job.op.value if job.op.value in TIMINGS else "update"))
            if job.status is not St.RUNNING:
                return  # an agent restart recovered it meanwhile
            if failure is None:
                failure = self._apply(job)
            if failure is not None:
                self._fail(job, failure)
                return
            if (
                job.op is Op.PATCH_APPLY
                and job.allow_reboot
                and self._needs_reboot(job)
                and self.faults.reboot_sequence == "2.5.5"
            ):
                # Older agents: the patch job completes, then a separate reboot job starts.
                self._set(job, St.COMPLETED, "Job completed")
                assert self._nursery is not None
                self._nursery.start_soon(self._separate_reboot, job.reboot_delay_seconds)
                return
            if job.op is Op.PATCH_APPLY and job.allow_reboot and self._needs_reboot(job):
                job.message = "Patches applied; awaiting reboot"
                job.progress = 90
                self._set(job, St.REBOOTING, job.message)
                reboot = SimJob(Op.REBOOT, [], reboot_delay_seconds=job.reboot_delay_seconds)
                self._reserve_reboot()
                self._add_job(reboot)
                assert self._nursery is not None
                self._nursery.start_soon(self._run_reboot, reboot)
                return
            if job.op is Op.PATCH_APPLY and job.allow_reboot:
                job.logs.append("No reboot required after patching (allow_reboot=true but no "
                                "reboot-triggering packages applied)")  # fmt: skip
            self._set(job, St.COMPLETED, "Job completed")
        finally:
            self._work.set()

    def _planned_failure(self, job: SimJob) -> CommandFailure | None:
        if job.internal:
            return None
        code = self.faults.fail_all_jobs
        if not code and self.faults.job_failures:
            code = self.faults.job_failures.pop(0)
        if not code:
            return None
        exit_code, stderr = FAILURES.get(code, FAILURES["UNKNOWN_ERROR"])
        distro = self.profile.distro
        if distro and code in distro.family.failures:  # each tool words it its own way
            exit_code, stderr = distro.family.failures[code]
        if distro and code == "PKG_NOT_FOUND":
            exit_code, stderr = distro.family.not_found
        package = job.packages[0] if job.packages else "all"
        return CommandFailure(exit_code, stderr.format(pkg=package), code)

    def _program(self) -> str:
        distro = self.profile.distro
        return distro.family.command if distro else "apt-get"

    def command_line(self, job: SimJob) -> str:
        """The command the agent runs for ``job`` (job logs of a failure)."""
        distro = self.profile.distro
        arguments = distro.family.arguments if distro else {}
        pin = distro.family.pin if distro else "="
        targets = [
            f"{name}{pin}{version}" if version and pin else name
            for name, version in ((n, job.versions.get(n)) for n in job.packages)
        ]
        if job.op is Op.PATCH_APPLY and job.apply_all:
            return f"{self._program()} {arguments.get('patch_all', 'dist-upgrade -y')}"
        return " ".join([self._program(), arguments.get(job.op.value, "install -y --"), *targets])

    def _fail(self, job: SimJob, failure: CommandFailure) -> None:
        """Fail ``job`` the way the agent reports a failed command (error_utils.rs): the error
        is the command's one-line summary (its first stderr line) and the code is classified
        from that chain, unless an injected failure names it."""
        program = self._program()
        status = "signal" if failure.exit_code is None else f"exit {failure.exit_code}"
        summary = f"{program} failed ({status}): {first_line(failure.stderr)}"
        context = f"Failed to execute {program} command"
        job.error = f"{summary}\n\nCaused by:\n    {context}"
        job.error_code = failure.code or classify(f"{summary} | {context}")
        job.exit_code = failure.exit_code
        job.command_stdout = ""
        job.command_stderr = failure.stderr + "\n"
        job.logs += [f"Job failed: {summary}", "Error chain:", *job.error.splitlines(), "",
                     "Command output:", f"Command failed ({status}): {self.command_line(job)}",
                     "[stderr]", *(f"  {line}" for line in failure.stderr.splitlines()),
                     "[stdout] (empty)"]  # fmt: skip
        self._set(job, St.FAILED)

    def _needs_reboot(self, job: SimJob) -> bool:
        if job.apply_all:
            return self.pending_reboot
        return self.pending_reboot or any(requires_reboot(n) for n in job.packages)

    def _not_found(self, name: str) -> CommandFailure:
        distro = self.profile.distro
        exit_code, stderr = distro.family.not_found if distro else FAILURES["PKG_NOT_FOUND"]
        return CommandFailure(exit_code, stderr.format(pkg=name))

    def _apply(self, job: SimJob) -> CommandFailure | None:
        """Change the package state for a successful job; or say how its command fails."""
        p = self.profile
        distro = p.distro
        pin = distro.family.pin if distro else "="
        if job.op is Op.PATCH_APPLY:
            names = list(p.upgradable) if job.apply_all else job.packages
            for name in names:
                if name not in p.installed and name not in p.upgradable:
                    return self._not_found(name)
            for name in names:
                if name in p.upgradable:
                    self._upgrade(job, name)
            return None
        if job.op is Op.INSTALL:
            for name, version in list(job.versions.items()):
                entry = p.entry(name)
                if version and entry and entry.epoch and version.startswith(entry.epoch):
                    job.versions[name] = version.removeprefix(entry.epoch)  # dnf takes E:V-R
            for name, version in job.versions.items():
                if not p.knows(name):
                    return self._not_found(name)
                if version is not None and pin and version not in p.offered(name):
                    if pin == "=":
                        return CommandFailure(100, f"E: Version '{version}' for '{name}' was "
                                                   "not found")  # fmt: skip
                    return self._not_found(f"{name}{pin}{version}")
                if version is not None and pin and self._is_downgrade(name, version):
                    # apt: the agent does not pass --allow-downgrades.
                    return CommandFailure(100, "E: Packages were downgraded and -y was used "
                                               "without --allow-downgrades.")  # fmt: skip
            for name, version in job.versions.items():
                target = (version if pin else None) or p.candidate(name)
                assert target is not None
                for dep in p.missing_dependencies(name):  # pulled in, as the tool does
                    self._set_version(dep, p.repo[dep].current)
                    job.logs.append(f"Setting up {dep} ({p.repo[dep].current}) ...")
                if p.upgradable.get(name) == target:
                    p.upgradable.pop(name)
                self._set_version(name, target)
                job.logs.append(f"Setting up {name} ({target}) ...")
                entry = p.entry(name)
                if entry and target in entry.versions and target != entry.current:
                    p.upgradable[name] = entry.current  # pinned back: the update is pending
            return None
        if job.op is Op.UPDATE:
            return self._update(job, job.packages[0])
        if job.op is Op.REMOVE:
            return self._remove(job, job.packages[0])
        return None

    def _update(self, job: SimJob, name: str) -> CommandFailure | None:
        """``PUT /packages/{name}`` as each tool does it (§3.8)."""
        p = self.profile
        family = p.family
        if name not in p.installed:
            if not p.knows(name):
                if family == "dnf":
                    return CommandFailure(1, f"No match for argument: {name}\nError: No "
                                             "packages marked for upgrade.")  # fmt: skip
                return self._not_found(name)
            if family == "pacman":  # pacman -S installs it
                return self._apply(SimJob(Op.INSTALL, [name], versions={name: None}))
            if family == "dnf":
                return CommandFailure(1, f"Package {name} available, but not installed.\nNo "
                                         f"match for argument: {name}\nError: No packages "
                                         "marked for upgrade.")  # fmt: skip
            # apt-get install --only-upgrade / apk upgrade: nothing to do, exit 0.
            job.logs.append(f"Skipping {name}, it is not installed and only requested upgrades.")
            return None
        if name in p.upgradable:
            self._upgrade(job, name)
        return None

    def _remove(self, job: SimJob, name: str) -> CommandFailure | None:
        """``DELETE /packages/{name}`` as each tool does it (§3.9): apt and dnf remove what
        depends on the package too, unless that takes a protected one; apk and pacman remove
        only the package, and refuse while another installed package depends on it."""
        p = self.profile
        distro = p.distro
        family = distro.family if distro else None
        if name not in p.installed:
            if p.family in ("apt", "apk") and p.knows(name):
                job.logs.append(f"Package '{name}' is not installed, so not removed")
                return None
            if p.family == "dnf":
                return CommandFailure(1, f"No match for argument: {name}\nError: No packages "
                                         "marked for removal.")  # fmt: skip
            if p.family == "apk":
                return None  # apk del of a name not in world changes nothing
            return self._not_found(name)
        dependents = p.dependents(name)
        if family is not None and family.name in ("apt", "dnf"):
            gone = [name, *dependents]
            hit = [n for n in gone if n in family.protected_names]
            if hit:
                exit_code, stderr = family.protected
                return CommandFailure(exit_code, stderr.format(pkg=", ".join(hit), by=""))
        elif family is not None and dependents:
            exit_code, stderr = family.protected
            return CommandFailure(exit_code, stderr.format(pkg=name, by=dependents[0]))
        else:
            gone = [name]
        for gone_name in gone:
            version = p.installed.pop(gone_name)
            p.upgradable.pop(gone_name, None)
            job.logs.append(f"Removing {gone_name} ({version}) ...")
        return None

    def _upgrade(self, job: SimJob, name: str) -> None:
        """Update ``name`` to its pending version, installing the new dependencies it has."""
        p = self.profile
        distro = p.distro
        for dep in distro.kernels[1].depends.get(name, ()) if distro else ():
            if dep in p.upgradable:  # a kernel metapackage needs the new build's versions
                self._upgrade(job, dep)
        for dep in p.missing_dependencies(name):
            self._set_version(dep, p.repo[dep].current)
            job.logs.append(f"Setting up {dep} ({p.repo[dep].current}) ...")
        self._set_version(name, p.upgradable.pop(name))

    def _is_downgrade(self, name: str, version: str) -> bool:
        """An install of ``name`` at an older ``version`` that the tool refuses: only apt-get
        install -y (no --allow-downgrades); dnf install NEVRA and apk add name=version install
        the version asked for, and pacman is never asked for a version."""
        if self.faults.downgrades != "refuse" or self.profile.family != "apt":
            return False
        offered = self.profile.offered(name)
        current = self.profile.installed.get(name)
        if current is None or version == current or version not in offered:
            return False
        return offered.index(version) < offered.index(current)

    def _set_version(self, name: str, version: str) -> None:
        previous = self.profile.installed.get(name)
        self.profile.installed[name] = version
        history = self.profile.history.setdefault(name, [])
        if previous is not None and previous not in history:
            history.append(previous)
        if version not in history:
            history.append(version)
        if requires_reboot(name):
            self.pending_reboot = True

    def start_internal_refresh(self, which: str) -> None:
        self._add_job(SimJob(Op.INSTALL, [f"__{which}_refresh__"], internal=True))

    # -- requests ---------------------------------------------------------------------------

    async def wait_requests(self, count: int) -> None:
        """Wait until this agent has received ``count`` requests in all (tests)."""
        while self.requests_served < count:
            await self._request_seen.wait()

    async def handle(self, request: Request) -> Response | WebSocketAccept:
        self.requests_served += 1
        if request.method in ("POST", "PUT", "DELETE"):
            self.mutations.append(f"{request.method} {request.path}")
            self.on_mutation()
        self._request_seen.set()
        self._request_seen = trio.Event()
        # Middleware order of the real agent: rate limiter first, then duplicate headers, then
        # the whitelist.
        wait = self._limiter.check(request.method, request.path, request.peer, trio.current_time())
        if wait is not None:
            return text(429, f"Rate limit exceeded. Retry after {wait} seconds.",
                        [("retry-after", str(wait))])  # fmt: skip
        if any(request.header_count(h) > 1 for h in _CRITICAL):
            return text(400, "Duplicate critical headers not allowed")
        if not self._whitelisted(request.peer):
            if self.faults.deny_mode == "close":
                raise Drop
            return Response(403)
        if self.faults.hang:
            with trio.move_on_after(120):
                await trio.sleep_forever()
            raise Drop
        if self.faults.slow_reply_s:
            await trio.sleep(self.faults.slow_reply_s)
        if self.slow_mutation_s and request.method in ("POST", "PUT", "DELETE"):
            # A slow agent: the job is created only after the client may have given up.
            delay, self.slow_mutation_s = self.slow_mutation_s, 0.0
            await trio.sleep(delay)
        response = await route(self, request)
        if isinstance(response, Response) and response.status == 202:
            # The job exists now; the answer is lost (connection closed, or never sent).
            if self.faults.drop_job_answers:
                self.faults.drop_job_answers -= 1
                raise Drop
            if self.faults.hold_job_answers:
                with trio.move_on_after(120):
                    await trio.sleep_forever()
                raise Drop
            if self.faults.job_answer_delay_s or self.answer_gate is not None:
                if self.answer_gate is not None:
                    await self.answer_gate.wait()
                else:
                    await trio.sleep(self.faults.job_answer_delay_s)
                self.delayed_answers += 1
                self.on_mutation()  # wakes Fleet.wait_until (tests)
            if self.bad_job_ids:  # the job exists; its id in the answer is garbage
                self.bad_job_ids -= 1
                body = json.loads(response.body)
                body["data"]["job_id"] = "../../system/reboot"
                response = Response(202, json.dumps(body).encode(), response.content_type)
        garbage = isinstance(response, Response) and response.content_type == "application/json"
        if self.faults.garbage and garbage:
            return Response(200, b'{"success": true, "data": {"trunc', "application/json")
        return response

    def _whitelisted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if address.version == 6:
            return False
        for entry in self.faults.whitelist:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                return False  # a malformed entry makes the whole list deny-all
        return False

    def health_data(self) -> dict[str, Any]:
        reason = self.faults.degraded
        crl_status = {"crl_expired": "expired", "crl_missing": "missing"}.get(reason, "valid")
        gpg_status = {"gpg_expired": "expired", "gpg_missing": "missing"}.get(reason, "valid")
        synced = reason != "repo_unsynced"
        degraded = bool(reason) or self.self_update_active
        now = wall_now()
        return {
            "status": "degraded" if degraded else "healthy",
            "uptime_seconds": self.uptime_seconds,
            "version": self.version + ("\u0000" if self.nul_text else ""),
            "last_cache_update": rfc3339(self.last_cache_update),
            "cache_status": "fresh",
            "crl_status": crl_status,
            "crl_age_seconds": 3600 if crl_status != "missing" else None,
            "crl_next_update": None if crl_status == "missing"
            else rfc3339(now + dt.timedelta(days=-1 if crl_status == "expired" else 6)),
            "gpg_key_status": gpg_status,
            "gpg_key_expires_at": rfc3339(now + dt.timedelta(days=300)),
            "repo_config_synced": synced,
            "repo_config_last_sync": rfc3339(now - dt.timedelta(hours=1)),
        }  # fmt: skip

    def patch_data(self) -> dict[str, Any]:
        p = self.profile
        patches: list[dict[str, Any]] = [
            {"name": name, "current_version": p.installed.get(name, ""), "available_version": new,
             "severity": severity_of(name), "description": "Package update available",
             "cve_ids": list(p.cve_ids.get(name, ())) if self.send_cve_ids else [],
             "requires_reboot": requires_reboot(name)}
            for name, new in sorted(p.upgradable.items())
        ]  # fmt: skip
        for patch in patches:  # dnf check-update prints the epoch; rpm -q does not
            entry = p.entry(patch["name"]) if p.family == "dnf" else None
            if entry is not None and entry.epoch:
                patch["available_version"] = entry.epoch + patch["available_version"]
        if self.faults.apt_parse_bug:  # agent-api §3.10
            for patch in patches:
                patch["current_version"], patch["available_version"] = (
                    patch["available_version"],
                    "amd64",
                )
        if self.nul_text:
            for patch in patches:
                patch["description"] = "Package\u0000update available"
                patch["cve_ids"] = ["CVE-2026-\u00001"]
        return {
            "patches": patches,
            "total": len(patches),
            "security_updates": sum(1 for x in patches if x["severity"] in ("critical", "high")),
            "requires_reboot": any(x["requires_reboot"] for x in patches),
        }
