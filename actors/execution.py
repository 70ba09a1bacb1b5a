"""Running one job row on one agent (R-4.2, R-4.3), crash-safely.

The row is claimed in the database first (atomically), the package versions before are
recorded, the request is sent, and the agent's job id is stored *before* anything relies on it.
Then the agent's WebSocket events are followed, and ``GET /jobs/{id}`` reconciles after every
(re)connect and every few seconds (events can be lost). A reboot makes the agent disappear for
minutes: the executor keeps reconnecting until the job is final or the deadline passes.

After a manager crash, ``resume`` picks up a row left ``dispatched``/``running``/``rebooting``:
with an agent job id it just follows it; without one it looks for the job on the agent (by
operation and time) before it would ever send the request again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import trio

from storage import JobHostRow, JobRow

from .agent_client import PatchSelection
from .agent_errors import AdmissionRefused, AgentError, RateLimited, TransportError
from .agent_records import JobAccepted, JobInfo, JobOperation, JobStatus
from .ports import JobAgentPort, JobStore

log = logging.getLogger(__name__)

OPERATIONS = {
    "patch": JobOperation.PATCH_APPLY,
    "install": JobOperation.INSTALL,
    "rollback": JobOperation.INSTALL,
    "update": JobOperation.UPDATE,
    "remove": JobOperation.REMOVE,
    "reboot": JobOperation.REBOOT,
}


class NothingToDo(Exception):
    """The selection is empty on this host (e.g. no security patches pending)."""


class Refused(Exception):
    """The manager refuses to send the request (a safety gate); ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Executor:
    """Executes job rows for one host. ``report`` is called with (row_id, state, progress)
    whenever the row's visible state changes (for the live relay)."""

    def __init__(
        self,
        host: str,
        host_id: int,
        store: JobStore,
        *,
        report: Callable[[int, str, str], None] = lambda row, state, job: None,
        wall: Callable[[], dt.datetime],
        reconcile_interval: float = 5.0,
        deadline: float = 3 * 3600.0,
        admission_retries: int = 20,
    ) -> None:
        self.host = host
        self.host_id = host_id
        self.store = store
        self.report = report
        self.wall = wall
        self.reconcile_interval = reconcile_interval
        self.deadline = deadline
        self.admission_retries = admission_retries
        self.requests_sent = 0
        self._uptime_before: int | None = None

    # -- entry points ------------------------------------------------------------------------

    async def run(self, agent: JobAgentPort, job: JobRow, row_id: int) -> None:
        row = await self.store.claim(row_id)
        if row is None:
            return  # someone else (a previous dispatch) has it
        self.report(row.id, "dispatched", f"job {job.id}")
        try:
            before = await self._packages(agent)
            await self.store.update(row.id, packages_before=before)
            accepted = await self._send(agent, job)
        except NothingToDo as exc:
            await self._finish(row.id, "succeeded", error_message=str(exc))
            return
        except Refused as exc:
            await self._finish(row.id, "failed", error_code=exc.code, error_message=str(exc))
            return
        except AgentError as exc:
            await self._finish(row.id, "failed", error_code=_code(exc), error_message=exc.message)
            return
        # Stored before anything relies on it: a crash from here on resumes, never resends.
        await self.store.update(
            row.id, agent_job_id=accepted.job_id, state="running", started_at=self.wall()
        )
        self.report(row.id, "running", f"job {job.id}")
        await self._follow(agent, row.id, accepted.job_id, job)

    async def resume(self, agent: JobAgentPort, row: JobHostRow) -> None:
        job = await self.store.job(row.job_id)
        agent_job_id = row.agent_job_id
        if agent_job_id is None:
            agent_job_id = await self._find_sent(agent, job, row)
            if agent_job_id is None:
                # The request never reached the agent: it is safe to send it now.
                log.info(
                    "resuming row %d: the agent never received it; sending now",
                    row.id,
                    extra={"host": self.host},
                )
                try:
                    accepted = await self._send(agent, job)
                except NothingToDo as exc:
                    await self._finish(row.id, "succeeded", error_message=str(exc))
                    return
                except AgentError as exc:
                    await self._finish(
                        row.id, "failed", error_code=_code(exc), error_message=exc.message
                    )
                    return
                agent_job_id = accepted.job_id
            await self.store.update(row.id, agent_job_id=agent_job_id, state="running")
        log.info("resuming row %d (agent job %s)", row.id, agent_job_id, extra={"host": self.host})
        await self._follow(agent, row.id, agent_job_id, job)

    # -- steps ------------------------------------------------------------------------------

    async def _send(self, agent: JobAgentPort, job: JobRow) -> JobAccepted:
        """Send the request; wait and retry while the agent's queue or slot refuses."""
        attempt = 0
        while True:
            try:
                self.requests_sent += 1
                return await self._request(agent, job)
            except (AdmissionRefused, RateLimited) as exc:
                attempt += 1
                if attempt > self.admission_retries:
                    raise
                wait = exc.retry_after or 10.0
                log.info(
                    "agent refused the job (%s); retrying in %.0fs",
                    exc.message,
                    wait,
                    extra={"host": self.host},
                )
                await trio.sleep(wait)

    async def _request(self, agent: JobAgentPort, job: JobRow) -> JobAccepted:
        if job.kind == "patch":
            if job.selection == "all":
                selection = PatchSelection.all()
            else:
                names = (
                    await self.store.security_patches(self.host_id)
                    if job.selection == "security"
                    else [str(p) for p in job.packages]
                )
                if not names:
                    raise NothingToDo("nothing selected is pending on this host")
                selection = PatchSelection.only(names)
            return await agent.apply_patches(
                selection, allow_reboot=job.allow_reboot, reboot_delay_seconds=job.reboot_delay_s
            )
        if job.kind in ("install", "rollback"):
            specs: list[tuple[str, str | None]] = []
            for p in job.packages:
                if isinstance(p, dict):
                    # Rollback rows carry per-host versions: {"host_id", "name", "version"}.
                    if "host_id" in p and int(p["host_id"]) != self.host_id:
                        continue
                    specs.append((str(p["name"]), p.get("version")))
                else:
                    specs.append((str(p), None))
            if not specs:
                raise NothingToDo("no package of this job concerns this host")
            return await agent.install(specs)
        if job.kind == "update":
            return await agent.update(str(job.packages[0]))
        if job.kind == "remove":
            return await agent.remove(str(job.packages[0]))
        if job.kind == "reboot":
            # never reboot a host whose package database is mid-change or broken.
            info = await agent.system_info()
            if info.package_db_clean is False:
                raise Refused(
                    "PACKAGE_DB_NOT_CLEAN",
                    "the agent reports an unclean package "
                    "database (dpkg --audit); fix it before rebooting",
                )
            self._uptime_before = (await agent.health()).uptime_seconds
            return await agent.reboot(delay_seconds=job.reboot_delay_s)
        raise ValueError(f"unknown job kind {job.kind}")

    async def _find_sent(self, agent: JobAgentPort, job: JobRow, row: JobHostRow) -> str | None:
        """The agent job our crashed predecessor may have created for this row."""
        since = (row.dispatched_at or self.wall()) - dt.timedelta(seconds=30)
        operation = OPERATIONS[job.kind]
        while True:
            try:
                jobs = await agent.jobs(limit=100)
                break
            except TransportError:
                await trio.sleep(self.reconcile_interval)
        candidates = [
            j
            for j in jobs
            if j.operation is operation and j.created_at is not None and j.created_at >= since
        ]
        candidates.sort(key=lambda j: j.created_at or since)
        return candidates[0].job_id if candidates else None

    async def _follow(
        self, agent: JobAgentPort, row_id: int, agent_job_id: str, job: JobRow
    ) -> None:
        info: JobInfo | None = None
        shown = ""
        backoff = 1.0
        with trio.move_on_after(self.deadline) as overall:
            while info is None or not info.status.terminal:
                try:
                    async with agent.job_events() as events:
                        backoff = 1.0
                        info = await agent.job(agent_job_id)  # reconcile after every connect
                        while not info.status.terminal:
                            shown = await self._show(row_id, info.status, shown, job)
                            with trio.move_on_after(self.reconcile_interval):
                                while True:
                                    event = await events.receive()
                                    if event.job_id == agent_job_id:
                                        shown = await self._show(row_id, event.status, shown, job)
                                        if event.status.terminal:
                                            break
                            info = await agent.job(agent_job_id)
                except AgentError as exc:
                    # The agent went away (reboot, restart) or refused us for a moment.
                    log.info(
                        "following agent job %s: %s; retrying",
                        agent_job_id,
                        exc.message,
                        extra={"host": self.host},
                    )
                    if shown == "rebooting" or exc.transient:
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                    await self._finish(
                        row_id,
                        "failed",
                        error_code=_code(exc),
                        error_message=f"lost track of the agent job: {exc.message}",
                    )
                    return
        if overall.cancelled_caught or info is None:
            await self._finish(
                row_id,
                "failed",
                error_code="MANAGER_TIMEOUT",
                error_message="the agent job did not finish in time",
            )
            return
        reboot_job = info.status is JobStatus.COMPLETED and job.kind == "reboot"
        if reboot_job and not await self._rebooted(agent):
            await self._finish(
                row_id,
                "failed",
                error_code="REBOOT_NOT_DETECTED",
                error_message="the agent says done but its uptime did not reset",
            )
            return
        if info.status is JobStatus.COMPLETED:
            after = await self._packages(agent)
            await self._finish(row_id, "succeeded", packages_after=after)
        else:
            await self._finish(
                row_id,
                "failed",
                error_code=info.error_code or "UNKNOWN_ERROR",
                error_message=(info.error or info.status.value)[:4000],
                error_stderr=(info.command_stderr or "")[:8000],
            )

    async def _rebooted(self, agent: JobAgentPort) -> bool:
        """The uptime reset proves the reboot (the agent's job state alone could be stale)."""
        before, self._uptime_before = self._uptime_before, None
        if before is None:
            return True  # resumed after a crash: the agent's orphan recovery is our evidence
        for _ in range(10):
            try:
                return (await agent.health()).uptime_seconds < before
            except AgentError:
                await trio.sleep(self.reconcile_interval)
        return False

    async def _packages(self, agent: JobAgentPort, attempts: int = 6) -> dict[str, str] | None:
        """Installed versions, retried through transient failures; None if unobtainable (the
        row still finishes; only its rollback data is missing)."""
        delay = 1.0
        for attempt in range(attempts):
            try:
                return await _package_map(agent)
            except AgentError as exc:
                if not exc.transient or attempt == attempts - 1:
                    log.warning(
                        "cannot read installed packages: %s", exc.message, extra={"host": self.host}
                    )
                    return None
                await trio.sleep(delay)
                delay = min(delay * 2, 15.0)
        return None

    async def _show(self, row_id: int, status: JobStatus, shown: str, job: JobRow) -> str:
        state = {"running": "running", "rebooting": "rebooting"}.get(status.value, "")
        if state and state != shown:
            await self.store.update(row_id, state=state)
            self.report(row_id, state, f"job {job.id}")
            return state
        return shown

    async def _finish(self, row_id: int, state: str, **values: Any) -> None:
        await self.store.update(
            row_id,
            state=state,
            finished_at=self.wall(),
            progress=100 if state == "succeeded" else 0,
            **values,
        )
        self.report(row_id, state, "")


async def _package_map(agent: JobAgentPort) -> dict[str, str]:
    return {p.name: p.version for p in await agent.packages()}


def _code(exc: AgentError) -> str:
    return str(getattr(exc, "code", "") or type(exc).__name__.upper())
