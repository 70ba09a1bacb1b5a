"""Groups: list, create, rename, delete, membership."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage import (
    Conflict,
    GroupItem,
    NotFound,
    assign_hosts,
    create_group,
    delete_group,
    list_groups,
    rename_group,
)

from .. import audit
from ..authz import Action, require, scope_changed, scope_of
from ..handle import AlreadyExists, Missing
from ..models import GroupCreate
from .base import Principal, System


async def all_groups(sys: System, who: Principal) -> list[GroupItem]:
    """Every group for admins; a scoped user's own groups otherwise."""
    return await sys.db.run(list_groups, scope_of(who))


async def create(sys: System, who: Principal, data: GroupCreate) -> GroupItem:
    require(who, Action.MANAGE_GROUPS)
    try:
        return await audit.audited(
            sys,
            lambda g: audit.entry(who, "group.create", f"group:{g.id}",
                                  after={"name": data.name, "description": data.description}),
            create_group, data.name, data.description,
        )  # fmt: skip
    except Conflict as exc:
        raise AlreadyExists("name", str(exc)) from None


def _name_of(conn: Any, group_id: int) -> str | None:
    return next((g.name for g in list_groups(conn) if g.id == group_id), None)


async def rename(sys: System, who: Principal, group_id: int, name: str) -> None:
    require(who, Action.MANAGE_GROUPS)

    def write(conn: Any) -> str | None:  # the old name
        old = _name_of(conn, group_id)
        rename_group(conn, group_id, name)
        return old

    try:
        await audit.audited(
            sys, lambda old: audit.entry(who, "group.rename", f"group:{group_id}",
                                         before={"name": old}, after={"name": name}),
            write,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no group with id {group_id}") from None
    except Conflict as exc:
        raise AlreadyExists("name", str(exc)) from None


async def delete(sys: System, who: Principal, group_id: int) -> None:
    require(who, Action.MANAGE_GROUPS)
    old = await sys.db.run(_name_of, group_id)
    try:
        await audit.audited(
            sys, audit.entry(who, "group.delete", f"group:{group_id}", before={"name": old}),
            delete_group, group_id,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no group with id {group_id}") from None
    scope_changed(sys.db)


async def assign(
    sys: System, who: Principal, group_id: int, host_ids: Sequence[int], member: bool
) -> int:
    """Add (or remove) hosts; returns how many memberships changed. Open relay
    subscriptions learn of the change at once."""
    require(who, Action.MANAGE_GROUPS)
    try:
        changed = await audit.audited(
            sys,
            audit.entry(who, "group.assign" if member else "group.unassign", f"group:{group_id}",
                        after={"hosts": list(host_ids)[:200], "count": len(host_ids)}),
            assign_hosts, group_id, list(host_ids), member,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no group with id {group_id}") from None
    scope_changed(sys.db)
    return changed
