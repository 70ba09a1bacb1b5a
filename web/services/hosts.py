"""Hosts: search, detail, registration, removal, refresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from settings import EffectivePolicy
from storage import (
    FleetCounts,
    HostEntry,
    HostFilter,
    HostListItem,
    HostRow,
    HostState,
    NotFound,
    PatchItem,
    Transition,
    fleet_counts,
    get_host,
    health_history,
    hosts_outside,
    installed_packages,
    load_host_state,
    open_patches,
    search_hosts,
    visible_host_ids,
)

from .. import audit
from ..authz import Action, require, scope_changed, scope_of
from ..freshness import current_condition, freshness
from ..handle import Missing
from ..models import HostCreate, HostQuery
from ..serialize import to_json
from .base import Principal, System


def host_filter(q: HostQuery) -> HostFilter:
    reboot = {"": None, "yes": True, "true": True, "no": False, "false": False}[q.reboot]
    return HostFilter(
        group=q.group,
        health=q.health,
        os=q.os,
        min_pending=q.min_pending,
        reboot=reboot,
        text=q.q.strip(),
        sort=q.sort,
        condition=q.condition,
        descending=q.order == "desc",
        limit=q.limit,
        offset=q.offset if q.offset is not None else (q.page - 1) * q.limit,
    )


def entry(
    item: HostListItem,
    live: Any,
    *,
    stale_s: float | None = None,
    now: dt.datetime | None = None,
) -> HostEntry:
    """``item`` with its condition from its live snapshot (``None``: from the stored health,
    stale after ``stale_s`` when given)."""
    fresh = freshness(
        to_json(live) if live is not None else None,
        health=item.health,
        reason=item.health_reason,
        last_seen=item.last_seen_at,
        stale_s=stale_s,
        now=now,
    )
    values = {f.name: getattr(item, f.name) for f in fields(HostListItem)}
    return HostEntry(**values, **{f.name: getattr(fresh, f.name) for f in fields(fresh)})


def live_json(snapshot: Any, now: dt.datetime | None = None) -> Any:
    """A live snapshot as JSON with its condition as of ``now`` (``stale`` once due)."""
    if snapshot is None:
        return None
    data = to_json(snapshot)
    data["condition"] = current_condition(
        snapshot.condition, snapshot.stale_after, now or dt.datetime.now(dt.UTC)
    )
    return data


def conditions(sys: System, now: dt.datetime) -> tuple[tuple[int, str], ...]:
    """Each live host's condition as of ``now`` (for filtering and sorting by it)."""
    return tuple(
        (s.host_id, current_condition(s.condition, s.stale_after, now))
        for s in sys.handle.snapshots()
    )


async def search(
    sys: System, who: Principal, q: HostQuery
) -> tuple[list[HostEntry], int, HostFilter]:
    """One page of matching hosts with their conditions, the number of matches and the
    filter used."""
    f = host_filter(q)
    now = dt.datetime.now(dt.UTC)
    if f.condition or f.sort == "condition":
        f = replace(f, live=conditions(sys, now))
    items, total = await sys.db.run(search_hosts, f, scope_of(who))
    return [entry(h, sys.handle.snapshot(h.id), now=now) for h in items], total, f


async def find(sys: System, who: Principal, f: HostFilter) -> list[HostListItem]:
    """The hosts matching ``f`` (one page of ``f.limit``), for the pages' own lists."""
    items, _ = await sys.db.run(search_hosts, f, scope_of(who))
    return items


async def get(sys: System, who: Principal, host_id: int) -> HostRow:
    """The host; ``Missing`` when unknown or outside the principal's scope."""
    try:
        return await sys.db.run(get_host, host_id, scope_of(who))
    except NotFound:
        raise Missing(f"no host with id {host_id}") from None


@dataclass(frozen=True)
class HostDetail:
    row: HostRow
    state: HostState | None
    live: Any
    policy: EffectivePolicy | None


async def detail(sys: System, who: Principal, host_id: int) -> HostDetail:
    row = await get(sys, who, host_id)
    return HostDetail(
        row,
        await sys.db.run(load_host_state, row.id),
        sys.handle.snapshot(row.id),
        sys.handle.effective_policy(row.id),
    )


async def register(sys: System, who: Principal, data: HostCreate) -> HostRow:
    """Raises ``InvalidInput`` / ``AlreadyExists`` naming the field."""
    require(who, Action.MANAGE_HOSTS)
    row = await sys.handle.register_host(
        data.name, display_name=data.display_name, groups=data.groups, port=data.port,
        audit=lambda r: audit.entry(who, "host.add", f"host:{r.id}", after=audit.host_view(r)),
    )  # fmt: skip
    scope_changed(sys.db)
    return row


async def remove(sys: System, who: Principal, host_id: int) -> HostRow:
    require(who, Action.MANAGE_HOSTS)
    await get(sys, who, host_id)
    try:
        row = await sys.handle.remove_host(
            host_id,
            audit=lambda r: audit.entry(who, "host.remove", f"host:{host_id}",
                                        before=audit.host_view(r)),
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no host with id {host_id}") from None
    scope_changed(sys.db)
    return row


async def require_in_scope(sys: System, who: Principal, host_ids: Sequence[int]) -> None:
    """``Missing`` naming the ids that are unknown or outside the principal's scope."""
    outside = await sys.db.run(hosts_outside, list(host_ids), scope_of(who))
    if outside:
        shown = ", ".join(map(str, outside[:10])) + (" …" if len(outside) > 10 else "")
        raise Missing(f"no host with id {shown}")


async def refresh(sys: System, who: Principal, host_ids: Sequence[int]) -> int:
    """Ask the agents of in-scope hosts for fresh data; ``Missing`` for any other id."""
    require(who, Action.REFRESH_HOSTS)
    await require_in_scope(sys, who, host_ids)
    # Recorded first: asking the agents cannot be rolled back, so a failed write asks nothing.
    await audit.record(sys, audit.entry(who, "host.refresh", audit.host_targets(host_ids),
                                        after={"hosts": len(host_ids)}))  # fmt: skip
    return sys.handle.refresh(list(host_ids))


async def patches(sys: System, who: Principal, host_id: int) -> list[PatchItem]:
    row = await get(sys, who, host_id)
    return await sys.db.run(open_patches, row.id)


async def packages(
    sys: System, who: Principal, host_id: int, text: str = ""
) -> tuple[list[tuple[str, str]], int]:
    """Installed packages whose name contains ``text`` literally (first 200) and the count."""
    row = await get(sys, who, host_id)
    return await sys.db.run(installed_packages, row.id, text)


async def history(sys: System, who: Principal, host_id: int) -> list[Transition]:
    row = await get(sys, who, host_id)
    return await sys.db.run(health_history, row.id)


async def summary(sys: System, who: Principal) -> FleetCounts:
    """The fleet's counts; ``by_condition`` from the live snapshots as of now (a host without
    one counts by its stored health: ``unknown`` while pending)."""
    counts = await sys.db.run(fleet_counts, scope_of(who))
    live = {s.host_id: s for s in await actors(sys, who)}
    if not live:
        return counts
    now = dt.datetime.now(dt.UTC)
    by_condition = {c: 0 for c in counts.by_condition}
    for snapshot in live.values():
        condition = current_condition(snapshot.condition, snapshot.stale_after, now)
        by_condition[condition] = by_condition.get(condition, 0) + 1
    missing = counts.hosts - len(live)
    if missing > 0:  # hosts without a snapshot yet (starting, refused): their stored health
        stored = await sys.db.run(fleet_counts, scope_of(who), list(live))
        for condition, count in stored.by_condition.items():
            by_condition[condition] = by_condition.get(condition, 0) + count
    return replace(counts, by_condition=by_condition)


async def actors_json(sys: System, who: Principal) -> list[Any]:
    """``actors`` as JSON, each condition as of now."""
    now = dt.datetime.now(dt.UTC)
    return [live_json(s, now) for s in await actors(sys, who)]


async def actors(sys: System, who: Principal) -> list[Any]:
    """The live snapshots of the hosts within the principal's scope."""
    snapshots = sys.handle.snapshots()
    scope = scope_of(who)
    if scope.all_hosts:
        return snapshots
    visible = await sys.db.run(visible_host_ids, scope)
    return [s for s in snapshots if s.host_id in visible]
