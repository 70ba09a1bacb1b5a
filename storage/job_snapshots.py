"""A job row's package snapshots (installed versions before and after it ran), kept in
``job_host_snapshots`` (migration 0022) beside the row: written by the executor through the row
writes of ``storage.jobs``, read by the job page, API and reports joined to the row, never by the
job coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# -- package snapshots -------------------------------------------------------------------------

SNAPSHOT_FIELDS = ("packages_before", "packages_after")


def split_snapshots(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` of a row write split into (row columns, snapshot columns)."""
    row = {k: v for k, v in values.items() if k not in SNAPSHOT_FIELDS}
    snapshots = {k: v for k, v in values.items() if k in SNAPSHOT_FIELDS}
    return row, snapshots


def write_snapshots(
    conn: psycopg.Connection[Any], row_id: int, snapshots: Mapping[str, dict[str, str] | None]
) -> None:
    """Store a row's package snapshots (``packages_before`` and/or ``packages_after``)."""
    if not snapshots:
        return
    columns = [k for k in SNAPSHOT_FIELDS if k in snapshots]
    values = [None if snapshots[k] is None else Jsonb(snapshots[k]) for k in columns]
    conn.execute(
        f"INSERT INTO job_host_snapshots (row_id, {', '.join(columns)})"
        f" VALUES (%s, {', '.join(['%s'] * len(columns))}) ON CONFLICT (row_id) DO UPDATE SET"
        f" {', '.join(f'{c} = EXCLUDED.{c}' for c in columns)}",
        [row_id, *values],
    )


def snapshots_of(
    conn: psycopg.Connection[Any], row_id: int
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """A row's (packages_before, packages_after)."""
    found = conn.execute(
        "SELECT packages_before, packages_after FROM job_host_snapshots WHERE row_id = %s",
        (row_id,),
    ).fetchone()
    return (None, None) if found is None else (found[0], found[1])
