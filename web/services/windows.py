"""Maintenance windows, blackouts and the calendar: one rule for times (``models``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from maintenance import (
    CalendarDay,
    Interval,
    Marked,
    WindowRule,
    describe,
    month_bounds,
    month_grid,
    occurrences,
)
from storage import (
    WINDOW_FIELDS,
    BlackoutRow,
    NotFound,
    WindowRow,
    create_blackout,
    delete_blackout,
    delete_window,
    existing_host_ids,
    group_exists,
    host_window_map,
    list_blackouts,
    list_windows,
    save_window,
    window_visible,
)

from .. import audit, freshness
from ..authz import Action, require, scope_of
from ..handle import InvalidInput, Missing
from ..models import BlackoutCreate, Window, WindowDraft
from .base import Principal, System


async def windows(sys: System, who: Principal) -> list[WindowRow]:
    """The windows of the principal's hosts and groups (all for admins)."""
    return await sys.db.run(list_windows, scope_of(who))


async def window(sys: System, who: Principal, window_id: int) -> WindowRow:
    """One window visible to the principal; ``Missing`` otherwise."""
    for item in await windows(sys, who):
        if item.id == window_id:
            return item
    raise Missing(f"no window with id {window_id}")


def text(row: WindowRow, today: dt.date | None = None) -> str:
    """The window's rule in words ("every Tue and Thu 22:00-02:00 Europe/Berlin")."""
    return describe(WindowRule.from_columns(row), today)


async def set_enabled(sys: System, who: Principal, window_id: int, enabled: bool) -> None:
    """Disable (or enable again) a window: the same replacement as an edit, so it is recorded
    and checked like one; ``Forbidden`` for a role that may not change windows (whatever the
    window), ``Missing`` for a window the principal cannot see."""
    require(who, Action.MANAGE_WINDOWS)
    row = await window(sys, who, window_id)
    values: dict[str, Any] = {f: getattr(row, f) for f in WINDOW_FIELDS}
    values["weekdays"] = list(row.weekdays)
    values["enabled"] = enabled
    await save(sys, who, Window.model_validate(values), window_id)


async def save(sys: System, who: Principal, data: Window, window_id: int | None = None) -> int:
    """Create (``window_id`` None) or replace a window; the jobs re-evaluate. The target host
    or group must exist within the principal's scope (``InvalidInput`` naming ``host_id`` /
    ``group_id``, the same answer as for one that does not exist); a window being replaced
    must be visible to them (``Missing`` otherwise)."""
    require(who, Action.MANAGE_WINDOWS)
    scope = scope_of(who)
    if data.host_id is not None and not await sys.db.run(existing_host_ids, [data.host_id], scope):
        raise InvalidInput("host_id", f"no host with id {data.host_id}")
    if data.group_id is not None and (
        not (scope.all_hosts or data.group_id in scope.group_ids)
        or not await sys.db.run(group_exists, data.group_id)
    ):
        raise InvalidInput("group_id", f"no group with id {data.group_id}")
    if window_id is not None and not await sys.db.run(window_visible, window_id, scope):
        raise Missing(f"no window with id {window_id}")
    columns = data.columns()

    def write(conn: Any) -> tuple[int, dict[str, Any] | None]:
        old = next((w for w in list_windows(conn) if w.id == window_id), None)
        return save_window(conn, columns, window_id, who.username), _window_view(old)

    try:
        saved, _ = await audit.audited(
            sys,
            lambda r: audit.entry(who, "window.update" if window_id else "window.create",
                                  f"window:{r[0]}", before=r[1], after=columns),
            write,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no window with id {window_id}") from None
    sys.handle.poke_jobs()
    return saved


async def delete(sys: System, who: Principal, window_id: int) -> None:
    require(who, Action.MANAGE_WINDOWS)
    if not await sys.db.run(window_visible, window_id, scope_of(who)):
        raise Missing(f"no window with id {window_id}")
    try:
        await audit.audited(
            sys, audit.entry(who, "window.delete", f"window:{window_id}"),
            delete_window, window_id, who.username,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no window with id {window_id}") from None
    sys.handle.poke_jobs()


def _window_view(row: WindowRow | None) -> dict[str, Any] | None:
    """A window as an audit entry keeps it (``before`` of an edit)."""
    if row is None:
        return None
    return {f: getattr(row, f) for f in WINDOW_FIELDS}


def upcoming(draft: WindowDraft, now: dt.datetime, count: int = 8) -> list[Interval]:
    """The next occurrences of a draft window (for the editor's live preview)."""
    return occurrences(draft.rule(), now, now + dt.timedelta(days=120))[:count]


def calendar(
    windows: list[WindowRow], blackouts: list[BlackoutRow], start: dt.datetime, days: int
) -> list[dict[str, Any]]:
    """Every enabled window's occurrences for the next ``days`` days, blackouts cut out."""
    end = start + dt.timedelta(days=days)
    shut = [Interval(b.starts_at, b.ends_at) for b in blackouts]
    entries = []
    for w in windows:
        if not w.enabled:
            continue
        for piece in occurrences(WindowRule.from_columns(w), start, end, shut):
            entries.append(
                {
                    "window_id": w.id,
                    "name": w.name,
                    "target": w.target,
                    "start": piece.start.isoformat(),
                    "end": piece.end.isoformat(),
                    "auto_apply": w.auto_apply,
                }
            )
    return sorted(entries, key=lambda e: e["start"])


async def upcoming_entries(
    sys: System, who: Principal, days: int, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    now = now or dt.datetime.now(dt.UTC)
    windows = await sys.db.run(list_windows, scope_of(who))
    return calendar(windows, await sys.db.run(list_blackouts), now, days)


async def month(
    sys: System, who: Principal, year: int, month: int, target: str = "", zone: str = "UTC"
) -> list[list[CalendarDay]]:
    """The month's grid (weeks Monday first) with every enabled window's occurrences (blackouts
    cut out) and the blackout periods, in the time zone ``zone`` (the user's: days start at
    local midnight, times are local; UTC for a name this system does not know). ``target``
    "group:ID" shows that group's windows, "host:ID" the windows that apply to the host (its
    own and its groups'); an unknown or out-of-scope target is an ``InvalidInput`` naming
    ``target``."""
    items = [w for w in await windows(sys, who) if w.enabled]
    labels = {w.id: w.name or w.target for w in items}
    kind, _, raw = target.partition(":")
    if target:
        if kind not in ("host", "group") or not raw.isdigit() or len(raw) > 18:
            raise InvalidInput("target", "choose a group or a host")
        wanted = int(raw)
        if kind == "host":
            if not await sys.db.run(existing_host_ids, [wanted], scope_of(who)):
                raise InvalidInput("target", f"no host with id {wanted}")
            applies = set((await sys.db.run(host_window_map)).get(wanted, []))
            # Every window that applies to the host, also those of its groups outside the
            # user's scope (their name withheld): they decide when the host is patched.
            items = [w for w in await sys.db.run(list_windows) if w.enabled and w.id in applies]
        else:
            scope = scope_of(who)
            if not (scope.all_hosts or wanted in scope.group_ids) or not await sys.db.run(
                group_exists, wanted
            ):
                raise InvalidInput("target", f"no group with id {wanted}")
            items = [w for w in items if w.group_id == wanted]
    local = freshness.zone(zone)
    start, end = month_bounds(year, month, local)
    shut = await sys.db.run(list_blackouts)
    cut = [Interval(b.starts_at, b.ends_at) for b in shut]
    marked = [
        Marked(labels.get(w.id, "window of another group"), piece)
        for w in items
        for piece in occurrences(WindowRule.from_columns(w), start, end, cut)
    ]
    blacked = [Marked(b.name or "blackout", Interval(b.starts_at, b.ends_at)) for b in shut]
    return month_grid(year, month, marked, blacked, local)


async def blackouts(sys: System, who: Principal) -> list[BlackoutRow]:
    return await sys.db.run(list_blackouts)


async def add_blackout(sys: System, who: Principal, data: BlackoutCreate) -> int:
    require(who, Action.MANAGE_BLACKOUTS)
    blackout_id = await audit.audited(
        sys,
        lambda b: audit.entry(who, "blackout.create", f"blackout:{b}", after=data.model_dump()),
        create_blackout, data.name, data.starts_at, data.ends_at,
    )  # fmt: skip
    sys.handle.poke_jobs()
    return blackout_id


async def remove_blackout(sys: System, who: Principal, blackout_id: int) -> None:
    require(who, Action.MANAGE_BLACKOUTS)
    try:
        await audit.audited(
            sys, audit.entry(who, "blackout.delete", f"blackout:{blackout_id}"),
            delete_blackout, blackout_id,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no blackout with id {blackout_id}") from None
    sys.handle.poke_jobs()
