"""What a deployment plan is computed from (issue 16 point 2): each selected host's state and
its pending patches from the last poll."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class PlanPatch:
    name: str
    current_version: str
    available_version: str
    severity: str
    requires_reboot: bool


@dataclass(frozen=True)
class PlanHost:
    id: int
    name: str
    display_name: str
    address: str
    paused: bool
    health: str
    health_reason: str
    os: str
    last_patch_poll_at: dt.datetime | None
    pending: tuple[PlanPatch, ...]
    pending_reboot: bool = False  # the host's reboot-required marker (last health poll)
    os_version: str = ""


def plan_hosts(conn: psycopg.Connection[Any], host_ids: Sequence[int]) -> list[PlanHost]:
    """The hosts of ``host_ids`` (in that order; unknown ids are left out) with their open
    patches, by name."""
    ids = list(host_ids)
    patches: dict[int, list[PlanPatch]] = {}
    for row in conn.execute(
        "SELECT host_id, name, current_version, available_version, severity, requires_reboot"
        " FROM host_patches WHERE resolved_at IS NULL AND host_id = ANY(%s)"
        " ORDER BY host_id, name",
        (ids,),
    ).fetchall():
        patches.setdefault(row[0], []).append(PlanPatch(*row[1:]))
    found = {
        row[0]: PlanHost(
            id=row[0],
            name=row[1],
            display_name=row[2],
            address=row[3],
            paused=row[4],
            health=row[5],
            health_reason=row[6],
            os=row[7],
            last_patch_poll_at=row[8],
            pending=tuple(patches.get(row[0], ())),
            pending_reboot=row[9],
            os_version=row[10],
        )
        for row in conn.execute(
            "SELECT id, name, display_name, coalesce(host(address), ''), paused, health,"
            " health_reason, os, last_patch_poll_at, pending_reboot, os_version FROM hosts"
            " WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    }
    return [found[i] for i in ids if i in found]


def job_plan(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    """The plan job ``job_id`` was created from (``jobs.plan``), None for jobs without one."""
    row = conn.execute("SELECT plan FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return None if row is None or row[0] is None else dict(row[0])
