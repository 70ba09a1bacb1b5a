"""Driving one job row through its persisted state machine on one agent (R-4.2, R-4.3).

    queued ─claim─▶ claimed ─(permit re-checked)─▶ request_sent ─202─▶ following
                                                       ─GET /jobs/{id}─▶ final

Every step is recorded *before* the step it guards, so that a crash anywhere resumes from
evidence, never from a guess:

- ``claimed``: nothing was sent; on resume the request is sent.
- ``request_sent``: the request may or may not have reached the agent (a crash, a timeout, a
  connection closed after the body was written). Reconciled from the agent's job list: a job of
  the same operation and packages that no row of this host already accounts for, created (on
  the agent's own clock) after the newest job this host's rows do account for. Found: adopted.
  The list says there is none: the request never got through and is sent again.
- ``following`` (``accepted`` in rows written before the agent job id and the state went in
  one write): the agent job id is stored; it is followed until ``GET /jobs/{id}`` says it is
  final. WebSocket events only wake that check up; a malformed
  event is skipped and counted.

Definite refusals (an agent error envelope, a refused connection) end or retry the attempt;
ambiguous transport errors never fail a row. A refused connection is retried along the host's
backoff ladder, then the row fails with ``HOST_UNREACHABLE``. The writes of the agent job id and
of final states are shielded from cancellation with a deadline; database outages are waited out.
A bad request that the agent could never accept (e.g. ``"openssl libssl3"`` as one package name)
fails the row with ``BAD_PACKAGE_NAME``; it never crashes the actor.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar, runtime_checkable

import trio

from maintenance import Pending, drift
from storage import DatabaseUnavailable, JobHostRow, JobRow

from .agent_client import PatchSelection, check_package_name, check_version
from .agent_errors import (
    AdmissionRefused,
    AgentError,
    AgentRequestError,
    AgentTimeout,
    ConnectionClosed,
    ProtocolError,
    RateLimited,
    TLSRejected,
    Unreachable,
)
from .agent_records import JobAccepted, JobInfo, JobOperation, JobStatus, is_job_id
from .ports import JobAgentPort, JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

OPERATIONS = {
    "patch": JobOperation.PATCH_APPLY,
    "install": JobOperation.INSTALL,
    "rollback": JobOperation.INSTALL,
    "update": JobOperation.UPDATE,
    "remove": JobOperation.REMOVE,
    "reboot": JobOperation.REBOOT,
}


NOTHING_PENDING = "NOTHING_PENDING"  # the code of a row that ends succeeded with nothing to do


class NothingToDo(Exception):
    """The selection is empty on this host (e.g. no security patches pending): the row ends
    succeeded with ``NOTHING_PENDING`` (a note, not an error; neutral in the roll-up)."""


class Refused(Exception):
    """The manager refuses to send the request (a safety gate or a bad request); ``code``
    says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RowLost(Exception):
    """The row is no longer this runner's (taken over, cancelled): stop without writing."""


class ShuttingDown(Exception):
    """Shutdown began before the request left: the row stays as it is for the next start."""


Request = Callable[[], Awaitable[JobAccepted]]


def pick_sent_job(
    jobs: Iterable[JobInfo], operation: JobOperation, names: Sequence[str], known: set[str]
) -> str | None:
    """The agent job a request in ``request_sent`` created, if the agent has it (pure).

    Candidates: same operation, not already recorded for this host, the same package names when
    the request named some, created (agent clock) no earlier than the newest job this host's
    rows already account for. The newest candidate wins: an older one is another attempt's."""
    jobs = [j for j in jobs if not j.internal and is_job_id(j.job_id)]
    floor = max(
        (j.created_at for j in jobs if j.job_id in known and j.created_at is not None),
        default=None,
    )
    wanted = {n.split("=")[0] for n in names}
    candidates = [
        j
        for j in jobs
        if j.operation is operation
        and j.job_id not in known
        and (floor is None or (j.created_at is not None and j.created_at >= floor))
        and (not wanted or not j.packages or {p.split("=")[0] for p in j.packages} == wanted)
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda j: j.created_at or dt.datetime.min.replace(tzinfo=dt.UTC))
    return newest.job_id


class Executor:
    """Executes job rows for one host. ``report(row_id, state, label)`` is called whenever the
    row's visible state changes (for the snapshot and the live relay)."""

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
        unreachable_backoff: Sequence[float] = (60.0, 300.0, 1800.0),
        write_deadline: float = 8.0,
        reboot_patience: float = 900.0,
        reconcile_settle: float = 60.0,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        self.host = host
        self.host_id = host_id
        self.store = store
        self.report = report
        self.wall = wall
        self.reconcile_interval = reconcile_interval
        self.deadline = deadline
        self.admission_retries = admission_retries
        self.unreachable_backoff = tuple(unreachable_backoff)
        self.write_deadline = write_deadline
        self.reboot_patience = reboot_patience  # how long a reboot may take to show
        self.reconcile_settle = reconcile_settle  # after a timeout: how long the job may take
        self.may_send = may_send  # false once shutdown began: no request leaves any more
        self.requests_sent = 0
        self.malformed_events = 0
        self.max_unseen_requests = 3  # requests the agent answered badly and never showed
        self._unseen = 0

    # -- entry point ------------------------------------------------------------------------

    async def execute(self, agent: JobAgentPort, row: JobHostRow) -> None:
        """Drive ``row`` (claimed by, or taken over by, this runner) from its recorded state to
        a final one. Returns when the row is final or no longer ours; waits as long as the
        agent job takes (bounded by ``deadline``). Raises only ``trio.Cancelled``."""
        job = await self._db(lambda: self.store.job(row.job_id))
        label = f"job {job.id}"
        self._unseen = 0
        try:
            with trio.move_on_after(self.deadline) as overall:
                agent_job_id: str | None
                if row.state == "claimed":
                    self.report(row.id, "claimed", label)
                    agent_job_id = await self._start(agent, job, row)
                elif row.state == "request_sent":
                    # Resumed (after a crash, or from another owner): the request may still be
                    # on its way through a slow agent if it left less than the settle time ago.
                    self.report(row.id, "request_sent", label)
                    age = (
                        (self.wall() - row.sent_at).total_seconds()
                        if row.sent_at is not None
                        else 0.0
                    )
                    settle = max(0.0, self.reconcile_settle - age)
                    agent_job_id = await self._reconcile(agent, job, row, settle=settle)
                else:
                    agent_job_id = row.agent_job_id
                if agent_job_id is not None:
                    # Sent by this run: the write that stored the agent job id made it
                    # ``following``; a resumed row is moved there first.
                    await self._follow(
                        agent,
                        row,
                        agent_job_id,
                        job,
                        recorded=row.state in ("claimed", "request_sent"),
                    )
            if overall.cancelled_caught:
                await self._finish(
                    row.id,
                    "failed",
                    error_code="MANAGER_TIMEOUT",
                    error_message=f"the row did not end within {self.deadline:.0f} s",
                )
        except RowLost:
            log.info("row %d is no longer ours; leaving it", row.id, extra={"host": self.host})
            self.report(row.id, "", "")
        except ShuttingDown:
            log.info("row %d: shutting down before sending; left claimed", row.id,
                     extra={"host": self.host})  # fmt: skip
        except Exception as exc:
            # A bug (ours, or an agent answer nobody foresaw) must end this row, not crash-loop
            # the host actor with the row never ending. trio.Cancelled is a BaseException.
            log.exception("row %d: internal error", row.id, extra={"host": self.host})
            await self._finish(
                row.id,
                "failed",
                error_code="INTERNAL_ERROR",
                error_message=f"internal error: {_describe(exc)}"[:4000],
            )

    # -- sending ----------------------------------------------------------------------------

    async def _start(self, agent: JobAgentPort, job: JobRow, row: JobHostRow) -> str | None:
        """From ``claimed``: prepare and send the request; the accepted agent job id, or None
        when the row ended here. An agent that cannot be read is waited for along the host's
        backoff ladder (then ``HOST_UNREACHABLE``)."""
        tries = 0
        problem = ""
        # The versions installed before the request, stored with the write that ends this
        # step (request_sent, or the row's end): one write fewer than a write of their own.
        snapshot: dict[str, Any] = {}
        while True:
            try:
                # A host that cannot be talked to (refused, our certificate rejected) gets no
                # request at all: a request it might half-receive would be an unclear outcome.
                # A package list read proves it can be. Unreachable or timed out: that error
                # decides the ladder; another failure asks the health probe (its error decides),
                # then the list is read again.
                snapshot = {"packages_before": await self._packages_or_health(agent)}
                request = await self._prepare(agent, job, row)
                break
            except NothingToDo as exc:
                await self._finish(
                    row.id,
                    "succeeded",
                    error_code=NOTHING_PENDING,
                    error_message=str(exc),
                    **snapshot,
                )
                return None
            except Refused as exc:
                await self._finish(
                    row.id, "failed", error_code=exc.code, error_message=str(exc), **snapshot
                )
                return None
            except AgentError as exc:
                if exc.transient and tries < len(self.unreachable_backoff):
                    # Say on the row why it waits and until when (nothing was sent yet).
                    await self._db(
                        partial(
                            self.store.update,
                            row.id,
                            error_message=self._ladder_note(exc.message, tries),
                        )
                    )
                    # Not past the row's permit (its window): the ladder ends at the close.
                    await self._wait(self.unreachable_backoff[tries], row)
                    tries += 1
                    problem = exc.message
                    if row.run_until is not None and self.wall() >= row.run_until:
                        if await self._finish(
                            row.id,
                            "skipped",
                            error_code="WINDOW_CLOSED",
                            error_message="the maintenance window closed before the request "
                            f"was sent (the last try: {problem})",
                            **snapshot,
                        ):
                            return None
                        raise RowLost from None
                    continue
                code = "HOST_UNREACHABLE" if exc.transient else _code(exc)
                await self._finish(
                    row.id, "failed", error_code=code, error_message=exc.message, **snapshot
                )
                return None
        if tries:  # reached after waiting: the ladder's note no longer holds
            snapshot["error_message"] = ""
        return await self._send(agent, job, row, request, snapshot)

    def _ladder_note(self, problem: str, tries: int) -> str:
        """The row's note while it waits along the unreachable ladder: the last error, when
        the next try is and when it gives up (UTC)."""
        now = self.wall()
        ahead = self.unreachable_backoff[tries:]
        next_try = now + dt.timedelta(seconds=ahead[0])
        gives_up = now + dt.timedelta(seconds=sum(ahead))
        return (
            f"agent unreachable ({problem}), next try {next_try:%H:%M} UTC,"
            f" gives up ~{gives_up:%H:%M} UTC; nothing sent yet"
        )

    async def _send(
        self,
        agent: JobAgentPort,
        job: JobRow,
        row: JobHostRow,
        request: Request,
        values: dict[str, Any] | None = None,
    ) -> str | None:
        """Send ``request`` (the row ``claimed``); ``values`` (the snapshot before) go with the
        first ``request_sent`` write, or with the row's end if it ends before that."""
        admissions = unreachable = 0
        problem = ""  # why the last try did not get through
        values = dict(values or {})
        while True:
            # The last check before the request leaves: the row's permit (its window) must
            # still be valid. A runner that waited (admission, backoff) never sends late, nor
            # during a shutdown (the row stays claimed: the next start sends it).
            if not self.may_send():
                raise ShuttingDown
            moved = await self._db(
                partial(
                    self.store.advance,
                    row.id,
                    ("claimed",),
                    "request_sent",
                    within_permit=True,
                    **values,
                )
            )
            if not moved:
                why = f" (the last try: {problem})" if problem else ""
                if await self._finish(
                    row.id,
                    "skipped",
                    error_code="WINDOW_CLOSED",
                    error_message="the maintenance window closed before the request was sent" + why,
                    **{k: v for k, v in values.items() if k != "error_message"},
                ):
                    return None
                raise RowLost
            values = {}  # written with request_sent
            self.report(row.id, "request_sent", f"job {job.id}")
            try:
                self.requests_sent += 1
                accepted = await request()
            except (AdmissionRefused, RateLimited) as exc:
                # Answered: the agent did not take it. Wait as asked, then try again.
                admissions += 1
                if admissions > self.admission_retries:
                    await self._back_to_claimed(row.id)
                    await self._finish(
                        row.id, "failed", error_code=_code(exc), error_message=exc.message
                    )
                    return None
                await self._back_to_claimed(row.id)
                wait = exc.retry_after or 10.0
                log.info("agent refused the job (%s); retrying in %.0fs", exc.message, wait,
                         extra={"host": self.host})  # fmt: skip
                problem = exc.message
                await self._wait(wait, row)
                continue
            except (Unreachable, TLSRejected) as exc:
                if isinstance(exc, ConnectionClosed):
                    # Closed after the request was written: the agent may have the job.
                    log.info("sending row %d: %s; reconciling", row.id, exc.message,
                             extra={"host": self.host})  # fmt: skip
                    return await self._reconcile(agent, job, row)
                # No connection at all, or a TLS alert refusing us in the handshake: the agent
                # processed nothing. Follow the host's backoff ladder.
                await self._back_to_claimed(row.id)
                if unreachable >= len(self.unreachable_backoff):
                    await self._finish(
                        row.id,
                        "failed",
                        error_code="HOST_UNREACHABLE",
                        error_message=f"the agent stayed unreachable: {exc.message}",
                    )
                    return None
                problem = exc.message
                await self._wait(self.unreachable_backoff[unreachable], row)
                unreachable += 1
                continue
            except AgentRequestError as exc:
                # The agent's own error envelope: a definite refusal of this request.
                await self._back_to_claimed(row.id)
                await self._finish(
                    row.id, "failed", error_code=_code(exc), error_message=exc.message
                )
                return None
            except AgentError as exc:
                # A timeout, a connection closed after the request was written, garbage in
                # the answer: the agent may have the job. Never a failure; reconcile. After a
                # timeout the agent may still be working through the request: its job list is
                # read for ``reconcile_settle`` seconds before concluding there is none.
                log.info("sending row %d: %s; reconciling", row.id, exc.message,
                         extra={"host": self.host})  # fmt: skip
                settle = self.reconcile_settle if isinstance(exc, AgentTimeout) else 0.0
                return await self._reconcile(agent, job, row, settle=settle)
            if await self._record_accepted(row.id, accepted.job_id):
                return accepted.job_id
            raise RowLost

    async def _wait(self, seconds: float, row: JobHostRow) -> None:
        """Sleep before the next try, but not past the row's permit: a window that closes
        meanwhile ends the row at once (the next send is refused), not after the backoff."""
        if row.run_until is not None:
            left = (row.run_until - self.wall()).total_seconds()
            seconds = min(seconds, max(left, 0.0) + 0.5)
        await trio.sleep(seconds)

    async def _back_to_claimed(self, row_id: int) -> None:
        if not await self._db(lambda: self.store.advance(row_id, ("request_sent",), "claimed")):
            raise RowLost

    async def _record_accepted(self, row_id: int, agent_job_id: str) -> bool:
        """Store the agent job id (shielded, with a deadline: it is the evidence a resume
        needs), the row ``following`` in the same write. If even that fails the row stays
        ``request_sent`` and is reconciled later."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.write_deadline):
                return await self._db(
                    lambda: self.store.advance(
                        row_id,
                        ("request_sent",),
                        "following",
                        agent_job_id=agent_job_id,
                        started_at=self.wall(),
                    )
                )
        return False

    async def _reconcile(
        self, agent: JobAgentPort, job: JobRow, row: JobHostRow, *, settle: float = 0.0
    ) -> str | None:
        """From ``request_sent``: find the job the request created, or learn that there is
        none (then send again). "None" needs the job list to show nothing for ``settle``
        seconds (read every ``reconcile_interval``): a slow agent may create the job after the
        client gave up. Transport errors are retried with a backoff (bounded by the row's
        deadline, and cancellable); they never fail the row."""
        operation = OPERATIONS[job.kind]
        names = _request_names(job, row)
        delay = min(self.reconcile_interval, 1.0)
        settled = trio.current_time() + settle
        while True:
            await trio.sleep(delay)  # let an agent still handling our request finish it
            try:
                jobs = await agent.jobs(limit=100)
            except AgentError as exc:
                log.info("reconciling row %d: %s; retrying", row.id, exc.message,
                         extra={"host": self.host})  # fmt: skip
                delay = min(max(delay * 2, 1.0), 60.0)
                continue
            known = await self._db(lambda: self.store.recorded_agent_jobs(self.host_id))
            found = pick_sent_job(jobs, operation, names, known)
            if found is not None:
                log.info("row %d: adopting agent job %s", row.id, found, extra={"host": self.host})
                if await self._record_accepted(row.id, found):
                    return found
                raise RowLost
            if trio.current_time() < settled:
                delay = min(self.reconcile_interval, max(settled - trio.current_time(), 0.0))
                continue
            self._unseen += 1
            if self._unseen > self.max_unseen_requests:
                await self._finish(
                    row.id,
                    "failed",
                    error_code="REQUEST_NOT_ACCEPTED",
                    error_message=f"the agent answered {self._unseen} requests without an "
                    "intelligible answer and shows no job for any of them",
                )
                return None
            log.info("row %d: the agent never received the request; sending it", row.id,
                     extra={"host": self.host})  # fmt: skip
            await self._back_to_claimed(row.id)
            try:
                request = await self._prepare(agent, job, row)
            except NothingToDo as exc:
                await self._finish(
                    row.id, "succeeded", error_code=NOTHING_PENDING, error_message=str(exc)
                )
                return None
            except Refused as exc:
                await self._finish(row.id, "failed", error_code=exc.code, error_message=str(exc))
                return None
            except AgentError:
                return await self._start(agent, job, row)  # reads the host again, with a ladder
            return await self._send(agent, job, row, request)

    async def _check_plan(self, agent: JobAgentPort, job: JobRow, row: JobHostRow) -> set[str]:
        """Re-read the host's pending list before sending a planned patch job and record on
        the row how it differs from the plan (``drift``, e.g. "2 packages newer than
        planned"); returns the names pending now. Raises ``AgentError``."""
        live = await agent.patches()
        now = [
            Pending(p.name, p.current_version, p.available_version, p.severity,
                    p.requires_reboot)
            for p in live.patches
        ]  # fmt: skip
        found = drift(row.planned or {}, now, job.selection)
        if found:
            log.info("row %d: %s", row.id, found, extra={"host": self.host})
            await self._db(partial(self.store.update, row.id, drift=found))
        return {p.name for p in now}

    async def _prepare(self, agent: JobAgentPort, job: JobRow, row: JobHostRow) -> Request:
        """What to send, checked before anything is sent. Raises ``NothingToDo``, ``Refused``
        (safety gates, bad package names) or ``AgentError`` (while reading the host)."""
        try:
            return await self._request(agent, job, row)
        except ValueError as exc:
            raise Refused("BAD_PACKAGE_NAME", f"the job cannot be sent: {exc}") from None

    async def _request(self, agent: JobAgentPort, job: JobRow, row: JobHostRow) -> Request:
        if job.kind == "patch":
            pending_now = None if row.planned is None else await self._check_plan(agent, job, row)
            if job.selection == "all":
                if pending_now is not None and not pending_now:
                    # Planned with nothing pending (a window job, or stale data): still none.
                    raise NothingToDo("nothing is pending on this host")
                selection = PatchSelection.all()
            else:
                names = (
                    await self._db(lambda: self.store.security_patches(self.host_id))
                    if job.selection == "security"
                    else _patch_names(job)
                )
                if pending_now is not None and job.selection == "list":
                    # The plan's chosen patches that are pending here: naming one that is not
                    # would install it (apt install -- names).
                    names = [n for n in names if n in pending_now]
                if not names:
                    raise NothingToDo("nothing selected is pending on this host")
                selection = PatchSelection.only(names)
            if job.allow_reboot:
                await self._remember_uptime(agent, row.id)
            return lambda: agent.apply_patches(
                selection, allow_reboot=job.allow_reboot, reboot_delay_seconds=job.reboot_delay_s
            )
        if job.kind in ("install", "rollback"):
            specs = _install_specs(job, row)
            if not specs:
                raise NothingToDo("no package of this job concerns this host")
            for name, version in specs:
                check_package_name(name)
                if version is not None:
                    check_version(version)
            return lambda: agent.install(specs)
        if job.kind in ("update", "remove"):
            if not job.packages:
                raise ValueError(f"an {job.kind} job needs a package name")
            name = check_package_name(str(job.packages[0]))
            return (
                (lambda: agent.update(name))
                if job.kind == "update"
                else (lambda: agent.remove(name))
            )
        if job.kind == "reboot":
            # never reboot a host whose package database is mid-change or broken.
            info = await agent.system_info()
            if info.package_db_clean is False:
                raise Refused(
                    "PACKAGE_DB_NOT_CLEAN",
                    "the agent reports an unclean package "
                    "database (dpkg --audit); fix it before rebooting",
                )
            await self._remember_uptime(agent, row.id)
            return lambda: agent.reboot(delay_seconds=job.reboot_delay_s)
        raise Refused("UNKNOWN_JOB_KIND", f"unknown job kind {job.kind!r}")

    async def _remember_uptime(self, agent: JobAgentPort, row_id: int) -> None:
        """Persisted, so that a reboot is confirmed by the uptime reset even after a crash."""
        uptime = (await agent.health()).uptime_seconds
        await self._db(lambda: self.store.update(row_id, uptime_before=uptime))

    # -- following --------------------------------------------------------------------------

    async def _follow(
        self,
        agent: JobAgentPort,
        row: JobHostRow,
        agent_job_id: str,
        job: JobRow,
        *,
        recorded: bool = False,
    ) -> None:
        """Follow the agent job to its end. ``recorded``: this run's write of the agent job
        id already made the row ``following`` (otherwise it is moved there, and must be ours)."""
        label = f"job {job.id}"
        if not recorded and not await self._db(
            lambda: self.store.advance(row.id, ("accepted", "following"), "following")
        ):
            raise RowLost
        self.report(row.id, "following", label)
        log.info("following agent job %s (row %d)", agent_job_id, row.id, extra={"host": self.host})
        info = await self._wait_final(agent, row.id, agent_job_id, label)
        if info is None:
            return
        if info.status is JobStatus.COMPLETED and (
            job.kind == "reboot" or (job.kind == "patch" and job.allow_reboot and _rebooting(info))
        ):
            patience = 0.0  # the agent job is final: the host is back, one reading decides
            if job.kind == "patch":
                # The patch job completed with a reboot to come (older agents, 2.5.5: in a
                # separate reboot job). The host is rebooting from now on (the poller must not
                # call it unreachable); only the uptime reset proves the reboot happened.
                await self._db(lambda: self.store.update(row.id, agent_status="rebooting"))
                self.report(row.id, "rebooting", label)
                reboot = await self._reboot_job_after(agent, info, row.id)
                if reboot is None:
                    patience = job.reboot_delay_s + self.reboot_patience
                elif await self._wait_final(agent, row.id, reboot, label) is None:
                    return
            if not await self._rebooted(agent, row.id, patience):
                await self._finish(
                    row.id,
                    "failed",
                    error_code="REBOOT_NOT_DETECTED",
                    error_message="the agent says done but its uptime did not reset",
                )
                return
        if info.status is JobStatus.COMPLETED:
            after = await self._packages(agent)
            await self._finish(row.id, "succeeded", packages_after=after)
        else:
            await self._finish(
                row.id,
                "failed",
                error_code=info.error_code or "UNKNOWN_ERROR",
                error_message=(info.error or info.status.value)[:4000],
                error_stderr=(info.command_stderr or _logged_stderr(info.logs))[:8000],
            )

    async def _wait_final(
        self, agent: JobAgentPort, row_id: int, agent_job_id: str, label: str
    ) -> JobInfo | None:
        """Until ``GET /jobs/{id}`` says the agent job is final. The job is read every
        ``reconcile_interval`` seconds whatever the WebSocket does; events only wake the read
        sooner (an agent whose upgrade is refused or broken is still followed). None when the
        row ended otherwise (the agent does not know the job)."""
        shown = ""
        woken = trio.Event()

        def wake() -> None:
            woken.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen, agent, agent_job_id, wake)
            while True:
                try:
                    info = await agent.job(agent_job_id)
                except AgentRequestError as exc:
                    if exc.status == 404:
                        nursery.cancel_scope.cancel()
                        await self._finish(
                            row_id,
                            "failed",
                            error_code="AGENT_JOB_UNKNOWN",
                            error_message=f"the agent does not know job {agent_job_id}: "
                            f"{exc.message}",
                        )
                        return None
                    log.info("following agent job %s: %s; retrying", agent_job_id, exc.message,
                             extra={"host": self.host})  # fmt: skip
                except AgentError as exc:
                    # The agent went away (reboot, restart) or the answer was bad: ask again.
                    log.info("following agent job %s: %s; retrying", agent_job_id, exc.message,
                             extra={"host": self.host})  # fmt: skip
                else:
                    if info.status.terminal:
                        nursery.cancel_scope.cancel()
                        return info
                    shown = await self._show(row_id, info.status, shown, label)
                with trio.move_on_after(self.reconcile_interval):
                    await woken.wait()
                woken = trio.Event()

    async def _listen(
        self, agent: JobAgentPort, agent_job_id: str, wake: Callable[[], None]
    ) -> None:
        """Keep a WebSocket open to hear about ``agent_job_id`` early: ``wake()`` on every
        (re)connect (events may have been missed) and when an event says the job is final.
        Connection failures are retried with a backoff; they never decide anything."""
        backoff = 1.0
        while True:
            try:
                async with agent.job_events() as events:
                    backoff = 1.0
                    wake()
                    while True:
                        await self._wait_event(events, agent_job_id)
                        wake()
            except AgentError as exc:
                log.debug("job events of %s: %s", agent_job_id, exc.message,
                          extra={"host": self.host})  # fmt: skip
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

    async def _wait_event(self, events: Any, agent_job_id: str) -> None:
        """Until an event about ``agent_job_id`` says it is final. Malformed events (about any
        job) are skipped and counted; they never decide anything."""
        while True:
            try:
                event = await events.receive()
            except ProtocolError as exc:
                self.malformed_events += 1
                log.info("skipped a malformed job event: %s", exc.message,
                         extra={"host": self.host})  # fmt: skip
                continue
            if event.job_id == agent_job_id and event.status.terminal:
                return

    async def _reboot_job_after(
        self, agent: JobAgentPort, patch: JobInfo, row_id: int
    ) -> str | None:
        """The reboot job an older agent started after completing ``patch``, if it can be seen
        (the host may already be down). Recorded on the row (``reboot_job_id``), so that no
        later row adopts it."""
        known = await self._db(lambda: self.store.recorded_agent_jobs(self.host_id))
        for _ in range(3):
            try:
                jobs = await agent.jobs(limit=100)
            except AgentError:
                await trio.sleep(self.reconcile_interval)
                continue
            since = patch.created_at
            reboots = [
                j
                for j in jobs
                if j.operation is JobOperation.REBOOT
                and j.job_id not in known
                and is_job_id(j.job_id)
                and (since is None or j.created_at is None or j.created_at >= since)
            ]
            if reboots:
                found = max(
                    reboots, key=lambda j: j.created_at or dt.datetime.min.replace(tzinfo=dt.UTC)
                ).job_id
                await self._db(partial(self.store.update, row_id, reboot_job_id=found))
                return found
            await trio.sleep(self.reconcile_interval)
        return None

    async def _rebooted(self, agent: JobAgentPort, row_id: int, patience: float = 0.0) -> bool:
        """Whether the uptime reset proves a reboot (the agent's job state alone could be
        stale). The uptime before was persisted when the request was prepared, so this holds
        after a crash too. With ``patience`` the reboot may still be to come: readings go on
        until the reset is seen or ``patience`` seconds passed; otherwise the first reading
        decides. An unreadable agent is retried for ``10 * reconcile_interval`` at least."""
        row = await self._db(lambda: self.store.row(row_id))
        give_up = trio.current_time() + max(patience, 10 * self.reconcile_interval)
        while True:
            try:
                uptime: int | None = (await agent.health()).uptime_seconds
            except AgentError:
                uptime = None
            if uptime is not None:
                if row is None or (row.uptime_before is None and row.sent_at is None):
                    log.warning(
                        "row %d: no uptime or send time recorded; the agent's word is taken",
                        row_id,
                        extra={"host": self.host},
                    )
                    return True
                if row.uptime_before is not None:
                    booted = uptime < row.uptime_before
                else:
                    assert row.sent_at is not None
                    booted = uptime < (self.wall() - row.sent_at).total_seconds()
                if booted or patience <= 0:
                    return booted
            if trio.current_time() >= give_up:
                return False
            await trio.sleep(self.reconcile_interval)

    async def _packages_or_health(self, agent: JobAgentPort) -> dict[str, str] | None:
        """The installed versions before a request, the host's reachability proven on the
        way: one list read. A host that cannot be reached or did not answer in time
        (``Unreachable``, ``AgentTimeout``) raises that error at once: one timeout per ladder
        try, no health probe timing out after it. Any other failure of the read (an HTTP error,
        a bad answer, a rejected connection) asks ``agent.health()`` (raises when the host
        cannot be talked to), then the list with retries (None if unobtainable)."""
        try:
            return await _package_map(agent)
        except (Unreachable, AgentTimeout):
            raise
        except AgentError as exc:
            log.info("reading installed packages: %s; probing health", exc.message,
                     extra={"host": self.host})  # fmt: skip
        await agent.health()
        return await self._packages(agent, attempts=3)

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

    async def _show(self, row_id: int, status: JobStatus, shown: str, label: str) -> str:
        state = {"running": "running", "rebooting": "rebooting"}.get(status.value, "")
        if state and state != shown:
            await self._db(lambda: self.store.update(row_id, agent_status=state))
            self.report(row_id, state, label)
            return state
        return shown

    async def _finish(self, row_id: int, state: str, **values: Any) -> bool:
        """The final write, shielded with a deadline (a cancelled runner still records what
        it knows). False when the row was not ours any more."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.write_deadline):
                done = await self._db(lambda: self.store.finish(row_id, state, **values))
                self.report(row_id, state, "")
                return done
        return False

    async def _db(self, call: Callable[[], Awaitable[T]]) -> T:
        """A store call; a database outage is waited out (with a backoff), not a crash."""
        delay = 0.5
        while True:
            try:
                return await call()
            except DatabaseUnavailable as exc:
                log.warning("database unavailable (%s); retrying in %.0fs", exc, delay,
                            extra={"host": self.host})  # fmt: skip
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)


def _install_specs(job: JobRow, row: JobHostRow) -> list[tuple[str, str | None]]:
    if job.kind == "rollback" and row.planned is not None:
        # The row's own versions to reinstall (migration 0022), not a scan of the job's list.
        return sorted(row.planned.items())
    specs: list[tuple[str, str | None]] = []
    for p in job.packages:
        if isinstance(p, dict):
            # Rollback jobs from before 0022: per-host versions {"host_id", "name", "version"}.
            if "host_id" in p and int(p["host_id"]) != row.host_id:
                continue
            specs.append((str(p["name"]), p.get("version")))
        else:
            specs.append((str(p), None))
    return specs


def _patch_names(job: JobRow) -> list[str]:
    """The packages a "list" patch job names: a name, or the name of a {"name", "version"}
    object (a patch applies the pending version, as the plan shows)."""
    return [str(p["name"]) if isinstance(p, dict) else str(p) for p in job.packages]


def _request_names(job: JobRow, row: JobHostRow) -> list[str]:
    if job.kind in ("install", "rollback"):
        return [name for name, _ in _install_specs(job, row)]
    if job.kind == "patch" and job.selection == "list":
        return _patch_names(job)
    if job.kind in ("update", "remove") and job.packages:
        return [str(job.packages[0])]
    return []


@runtime_checkable
class _VersionReader(Protocol):
    """An agent that reads ``{name: version}`` straight from the package list (``AgentClient``:
    ~7x less CPU than records for 1,200 packages)."""

    async def installed_versions(self) -> dict[str, str]: ...


async def _package_map(agent: JobAgentPort) -> dict[str, str]:
    if isinstance(agent, _VersionReader):
        return await agent.installed_versions()
    return {p.name: p.version for p in await agent.packages()}


def _logged_stderr(logs: Sequence[str]) -> str:
    """The ``[stderr]`` part of an agent job's log (agent-api §3.13), for a failure whose
    ``command_stderr`` is empty: the error an operator needs is often only there."""
    lines = list(logs)
    if "[stderr]" not in lines:
        return ""
    return "\n".join(line.strip() for line in lines[lines.index("[stderr]") + 1 :]) + "\n"


def _rebooting(patch: JobInfo) -> bool:
    """Whether a completed patch job (allowed to reboot) leads to a reboot: the agent logs
    that none was needed otherwise (agent-api §3.11)."""
    return not any("No reboot required" in line for line in patch.logs)


def _describe(exc: BaseException) -> str:
    """The innermost exception of (nested) exception groups, as ``Type: message``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _code(exc: AgentError) -> str:
    return str(getattr(exc, "code", "") or type(exc).__name__.upper())
