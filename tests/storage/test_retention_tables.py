"""Retention bounds the tables that grew without limit (review F13b, low): window runs of old
occurrences, expired or revoked API tokens (their groups, refresh tokens and families with
them), refresh families with nothing left, and old retention runs (finished or not)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from storage import Database, list_groups, save_window
from storage.retention import PRUNE_STEPS, prune_batch
from storage.users import create_user

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=30)
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=1)


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _setup(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO groups (name) VALUES ('web')")
    group = next(g.id for g in list_groups(conn) if g.name == "web")
    save_window(conn, {
        "name": "nightly", "group_id": group, "recurrence": "daily", "start_date": OLD.date(),
        "start_time": dt.time(2, 0), "duration_minutes": 60, "timezone": "UTC", "weekdays": [],
        "enabled": True,
    }, None, "test")  # fmt: skip
    window = conn.execute("SELECT id FROM maintenance_windows").fetchone()
    assert window is not None
    for at in (OLD, RECENT):
        conn.execute(
            "INSERT INTO window_runs (window_id, occurrence_start) VALUES (%s, %s)", (window[0], at)
        )
    user = create_user(conn, "alice", "x", "admin")
    tokens = {}
    for name, expires, revoked in (
        ("expired", OLD, None), ("revoked", NOW + dt.timedelta(days=90), OLD),
        ("live", NOW + dt.timedelta(days=90), None), ("just-expired", RECENT, None),
    ):  # fmt: skip
        row = conn.execute(
            "INSERT INTO api_tokens (user_id, name, scope, token_hash, hint, expires_at,"
            " revoked_at) VALUES (%s, %s, 'read', %s, 'h', %s, %s) RETURNING id",
            (user.id, name, name.encode(), expires, revoked),
        ).fetchone()
        assert row is not None
        tokens[name] = row[0]
    # A live token's family whose refresh tokens are gone (expired and pruned), and one in use.
    conn.execute(
        "INSERT INTO api_token_families (family_id, api_token_id) VALUES (%s, %s), (%s, %s)",
        (uuid.uuid4(), tokens["live"], uuid.uuid4(), tokens["live"]),
    )
    in_use = conn.execute("SELECT family_id FROM api_token_families LIMIT 1").fetchone()
    assert in_use is not None
    conn.execute(
        "INSERT INTO api_refresh_tokens (token_hash, api_token_id, family_id, expires_at)"
        " VALUES ('r', %s, %s, %s)",
        (tokens["live"], in_use[0], NOW + dt.timedelta(hours=1)),
    )
    for started, finished in ((OLD, OLD), (OLD, None), (RECENT, None), (RECENT, RECENT)):
        conn.execute(
            "INSERT INTO retention_runs (started_at, finished_at, operational_cutoff,"
            " audit_cutoff) VALUES (%s, %s, %s, %s)",
            (started, finished, started, started),
        )


async def test_old_window_runs_tokens_families_and_retention_runs_are_pruned(
    db: Database,
) -> None:
    await db.run(_setup)

    def prune_all(conn: psycopg.Connection[Any]) -> dict[str, int]:
        return {step: prune_batch(conn, step, CUTOFF, NOW, 1000) for step in PRUNE_STEPS}

    deleted = await db.run(prune_all)
    assert deleted["window_runs"] == 1
    assert deleted["api_tokens"] == 2  # expired and revoked before the cutoff
    assert deleted["api_token_families"] == 1  # the live token's family with nothing left
    assert deleted["retention_runs"] == 2  # started before the cutoff, finished or not
    counts = await db.run(lambda c: {t: _count(c, t) for t in (
        "window_runs", "api_tokens", "api_token_families", "retention_runs")})  # fmt: skip
    assert counts == {
        "window_runs": 1,
        "api_tokens": 2,
        "api_token_families": 1,
        "retention_runs": 2,
    }
