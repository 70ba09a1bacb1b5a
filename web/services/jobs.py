"""Jobs: host selection (literal filters, the all-hosts confirmation), creation, preview,
listing, cancel, retry, rollback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from maintenance import downgrade_refusal, is_downgrade
from storage import (
    HostFilter,
    JobHostRow,
    JobRow,
    JobSpec,
    NotFound,
    existing_host_ids,
    get_job,
    host_count,
    job_hosts_outside,
    job_rows,
    list_jobs,
    pending_union,
    plan_hosts,
    search_hosts,
)
from storage.inventory import CONDITIONS
from storage.jobs import AttemptRow, job_attempts
from storage.plans import job_plan

from .. import audit
from ..auth import require_recent_mfa
from ..authz import Action, require, scope_of
from ..handle import InvalidInput, Missing, Stale
from ..models import MAX_SELECTION, HostSelection, JobCreate
from .base import Principal, System
from .hosts import conditions
from .plans import Plan, StoredHost, compute, stored_hosts


@dataclass(frozen=True)
class Resolved:
    """The hosts a selection reaches now, and whether that is the whole fleet."""

    host_ids: list[int]
    fleet: int

    @property
    def everything(self) -> bool:
        return self.fleet > 0 and len(self.host_ids) == self.fleet


async def resolve(sys: System, who: Principal, sel: HostSelection) -> Resolved:
    """Host ids from an explicit list, a group, or a literal text filter (in that order);
    ``all_hosts`` alone selects every host. Only hosts within the principal's scope are
    reached ("every host" is every host of the scope); unknown or out-of-scope explicit ids
    are an ``InvalidInput`` (the same message for both)."""
    scope = scope_of(who)
    fleet = await sys.db.run(host_count, scope)
    if sel.host_ids:
        wanted = list(dict.fromkeys(sel.host_ids))
        known = await sys.db.run(existing_host_ids, wanted, scope)
        missing = [i for i in wanted if i not in known]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            raise InvalidInput("host_ids", f"no host with id {shown}")
        return Resolved(wanted, fleet)
    f = HostFilter(group=sel.group, text=sel.filter.strip(), limit=MAX_SELECTION)
    items, _ = await sys.db.run(search_hosts, f, scope)
    return Resolved([h.id for h in items], fleet)


def _confirm_everything(sel: HostSelection, found: Resolved, derived: bool = False) -> None:
    """A group or filter that reaches every host must be confirmed with ``all_hosts``; so
    must host ids that were ``derived`` from one (the Deploy page's selection by condition),
    on the count they resolve to. Ids the user listed one by one need no confirmation."""
    if (sel.host_ids and not derived) or sel.all_hosts or not found.everything:
        return
    raise InvalidInput(
        "all_hosts",
        f'the selection matches all {found.fleet} hosts of the fleet: tick "yes, deploy to '
        'every host" (all_hosts: true in the API) to confirm',
    )


def spec_of(data: JobCreate, who: Principal, plan: Plan | None = None) -> JobSpec:
    """The job to store; with its ``plan`` (``plans.compute``): the plan is kept, each row
    gets its planned versions and the rows of skipped hosts start skipped."""
    return JobSpec(
        kind=data.kind,
        schedule=data.schedule,
        selection=data.selection,
        packages=data.package_values(),
        allow_reboot=data.allow_reboot,
        reboot_delay_s=data.reboot_delay_s,
        batch_size=data.batch_size,
        batch_percent=data.batch_percent,
        failure_threshold=data.failure_threshold,
        canary=data.canary,
        created_by=who.username,
        plan=None if plan is None else plan.stored(),
        planned={} if plan is None or data.kind != "patch" else plan.planned(),
        skipped={} if plan is None else plan.skips(),
        nothing={} if plan is None else plan.nothing(),
    )


async def create(
    sys: System, who: Principal, data: JobCreate, seen_plan: str = "", derived: bool = False
) -> tuple[int, int]:
    """Store the job; returns (job id, number of hosts). ``seen_plan``: the digest of the plan
    the user confirmed (the Deploy page); ``Stale`` (409) when the plan is another now.
    ``derived``: the host ids came from a condition / group / filter, not a list the user
    made (reaching every host, they need ``all_hosts`` as a group does)."""
    require(who, Action.DEPLOY)
    found = await resolve(sys, who, data)
    if not found.host_ids:
        raise InvalidInput("hosts", "no host matches the selection")
    reboots = data.kind == "reboot" or data.allow_reboot
    if data.schedule == "now" and reboots:
        require_recent_mfa(reboot_hosts=len(found.host_ids))  # many at once: reauth_required
    _confirm_everything(data, found, derived)
    computed = await compute(sys, data, found.host_ids)
    if data.schedule != "now" and reboots:  # hosts whose window is open now reboot at once too
        at = dt.datetime.now(dt.UTC)
        hosts = computed.hosts
        opened = [h for h in hosts if not h.skip and h.window_start and h.window_start <= at]
        if opened:
            require_recent_mfa(reboot_hosts=len(opened))
    seen_plan = seen_plan or data.plan_digest
    if seen_plan and computed.digest() != seen_plan:
        raise Stale("plan", "the plan changed since you saw it: check the new plan, then deploy")
    spec = spec_of(data, who, computed)
    job_id = await sys.handle.create_job(
        spec, found.host_ids,
        audit=lambda j: audit.entry(who, "job.create", f"job:{j}",
                                    after=audit.job_view(spec, found.host_ids)),
    )  # fmt: skip
    return job_id, len(found.host_ids)


async def plan(sys: System, who: Principal, data: JobCreate) -> tuple[Resolved, Plan]:
    """The hosts a draft job reaches now and its plan (what ``create`` would store)."""
    require(who, Action.DEPLOY)
    found = await resolve(sys, who, data)
    return found, await compute(sys, data, found.host_ids)


@dataclass(frozen=True)
class Preview:
    hosts: list[int]
    everything: bool
    patches: list[dict[str, Any]]


async def condition_hosts(
    sys: System, who: Principal, group: str, text: str, condition: str
) -> list[int]:
    """The Deploy page's selection by condition (the live one, as the hosts list shows it):
    the ids of the hosts of ``group`` / matching ``text`` that are in ``condition`` now
    (at most ``MAX_SELECTION``); ``InvalidInput`` naming ``condition`` for an unknown one.
    The job then names these hosts (a condition changes: the plan shows who it is now)."""
    require(who, Action.DEPLOY)
    if condition not in CONDITIONS:
        raise InvalidInput("condition", f"one of {', '.join(CONDITIONS)}")
    now = dt.datetime.now(dt.UTC)
    f = HostFilter(
        group=group, text=text.strip(), condition=condition, limit=MAX_SELECTION,
        live=conditions(sys, now),
    )  # fmt: skip
    items, _ = await sys.db.run(search_hosts, f, scope_of(who))
    return [h.id for h in items]


async def names(sys: System, host_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(id, display name) of ``host_ids`` (already in the principal's scope), in that order."""
    return [(h.id, h.display_name or h.name) for h in await sys.db.run(plan_hosts, host_ids)]


async def preview(sys: System, who: Principal, sel: HostSelection) -> Preview:
    require(who, Action.DEPLOY)
    found = await resolve(sys, who, sel)
    patches = await sys.db.run(pending_union, found.host_ids) if found.host_ids else []
    return Preview(found.host_ids, found.everything, patches)


async def jobs(
    sys: System, who: Principal, status: str = ""
) -> list[tuple[JobRow, dict[str, int]]]:
    """Jobs with at least one host within the principal's scope, newest first."""
    return await sys.db.run(list_jobs, status, 100, scope_of(who))


async def get(sys: System, who: Principal, job_id: int) -> tuple[JobRow, list[JobHostRow]]:
    """A job visible to the principal (one of its hosts in scope) with the rows of the hosts
    in scope; ``Missing`` otherwise."""
    scope = scope_of(who)
    try:
        job = await sys.db.run(get_job, job_id, scope)
    except NotFound:
        raise Missing(f"no job {job_id}") from None
    return job, await sys.db.run(job_rows, job_id, scope)


async def stored_plan(
    sys: System, job_id: int, rows: Sequence[JobHostRow]
) -> dict[int, StoredHost]:
    """The job's stored plan for ``rows`` (as ``get`` returned them: in scope), by host id."""
    plan = await sys.db.run(job_plan, job_id)
    return stored_hosts(plan, {r.host_id for r in rows})


async def attempts(sys: System, rows: list[JobHostRow], job_id: int) -> dict[int, list[AttemptRow]]:
    """The earlier attempts of ``rows`` (as ``get`` returned them: in scope), by row id."""
    shown = {r.id for r in rows}
    found = await sys.db.run(job_attempts, job_id)
    return {row_id: a for row_id, a in found.items() if row_id in shown}


async def _require_whole_job(sys: System, who: Principal, job_id: int) -> None:
    """A job is changed only by someone who may deploy and whose scope holds every host it
    targets: ``Forbidden`` for the role, ``Missing`` when the job is not visible,
    ``InvalidInput`` when some of its hosts are outside the scope."""
    require(who, Action.DEPLOY)
    await get(sys, who, job_id)
    outside = await sys.db.run(job_hosts_outside, job_id, scope_of(who))
    if outside:
        raise InvalidInput(  # no number: how many hosts outside the scope is not theirs
            "job_id", "the job also targets hosts outside your groups; ask an admin"
        )


async def cancel(sys: System, who: Principal, job_id: int) -> int:
    await _require_whole_job(sys, who, job_id)
    try:
        return await sys.handle.cancel_job(
            job_id, audit=lambda n: audit.entry(who, "job.cancel", f"job:{job_id}",
                                                after={"rows_cancelled": n})
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no job {job_id}") from None


async def retry(sys: System, who: Principal, job_id: int) -> int:
    await _require_whole_job(sys, who, job_id)
    job, rows = await get(sys, who, job_id)
    if job.schedule == "now" and (job.kind == "reboot" or job.allow_reboot):
        # retrying reboots them at once: as many as a new job would need a second factor
        require_recent_mfa(reboot_hosts=sum(r.state == "failed" for r in rows))
    return await sys.handle.retry_failed(
        job_id, audit=lambda n: audit.entry(who, "job.retry", f"job:{job_id}",
                                            after={"rows_retried": n})
    )  # fmt: skip


async def rollback_refusals(sys: System, rows: Sequence[JobHostRow]) -> dict[int, str]:
    """Host id → why rolling back its row cannot work: undoing it needs an older version
    installed and the host's package manager cannot (``maintenance.downgrade_refusal``).
    Hosts not named can be rolled back (or have nothing to undo)."""
    needing = [
        r
        for r in rows
        if r.state == "succeeded" and is_downgrade(r.packages_before, r.packages_after)
    ]
    if not needing:
        return {}
    hosts = {h.id: h for h in await sys.db.run(plan_hosts, [r.host_id for r in needing])}
    found = {}
    for r in needing:
        host = hosts.get(r.host_id)
        why = downgrade_refusal(host.os, host.os_version) if host else downgrade_refusal("")
        if why:
            found[r.host_id] = why
    return found


def _changed(rows: Sequence[JobHostRow]) -> list[JobHostRow]:
    """The rows a rollback would undo: succeeded, with packages changed."""
    return [r for r in rows if r.state == "succeeded" and r.packages_before != r.packages_after]


def _refused_text(rows: Sequence[JobHostRow], refused: dict[int, str]) -> str:
    """Each reason with the display names of the hosts it holds for."""
    by_reason: dict[str, list[str]] = {}
    for r in rows:
        if r.host_id in refused:
            by_reason.setdefault(refused[r.host_id], []).append(r.display_name or r.host_name)
    return "; ".join(f"{why} ({', '.join(names)})" for why, names in sorted(by_reason.items()))


def rollback_blocked(rows: Sequence[JobHostRow], refused: dict[int, str]) -> str:
    """Why rolling back the whole job cannot work ("" when some host can be rolled back):
    no host changed anything, or no changed host's package manager can go back."""
    changed = _changed(rows)
    if not changed:
        return "no host of this job changed a package (nothing to roll back)"
    if all(r.host_id in refused for r in changed):
        return _refused_text(changed, refused)
    return ""


async def _rollback_hosts(
    sys: System, job_id: int, host_ids: Sequence[int] | None
) -> list[int] | None:
    """The hosts a rollback may reach: those asked for (all by default) whose package manager
    can undo the change; ``InvalidInput`` with the reason when none of them can."""
    rows = await sys.db.run(job_rows, job_id)
    refused = await rollback_refusals(sys, rows)
    if not refused:
        return None if host_ids is None else list(host_ids)
    changed = [r for r in _changed(rows) if host_ids is None or r.host_id in host_ids]
    able = [r.host_id for r in changed if r.host_id not in refused]
    if not able:
        raise InvalidInput("host_id", _refused_text(changed, refused) or "nothing to roll back")
    return able


async def rollback(sys: System, who: Principal, job_id: int, host_ids: Sequence[int] | None) -> int:
    """A new job reinstalling the versions from before, on the hosts whose package manager
    can (``rollback_refusals``); ``InvalidInput`` when nothing to do."""
    await _require_whole_job(sys, who, job_id)
    host_ids = await _rollback_hosts(sys, job_id, host_ids)
    return await sys.handle.rollback(
        job_id, None if host_ids is None else list(host_ids),
        audit=lambda j: audit.entry(who, "job.rollback", f"job:{j}",
                                    after={"rollback_of": job_id,
                                           "hosts": None if host_ids is None else list(host_ids)}),
    )  # fmt: skip
