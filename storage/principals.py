"""Who a logged-in user is for authorization: role, state and the groups that scope them.

The web layer's ``authz`` module decides what a role may do; this module only loads the facts
(one query) and answers "which of these hosts does a scope admit" in SQL, with the one fragment
``scope_condition``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .errors import DatabaseUnavailable, NotFound
from .scope import HostScope, scope_condition


@dataclass(frozen=True)
class PrincipalRow:
    """A user as authorization sees them: ``role`` and ``state`` as stored (the web layer maps
    unknown values to "no rights"), ``group_ids`` the groups that scope an operator/auditor."""

    user_id: int
    username: str
    role: str
    state: str
    group_ids: frozenset[int]


def load_principal(conn: psycopg.Connection[Any], user_id: int) -> PrincipalRow | None:
    """The user with their group ids, or None when the user no longer exists."""
    row = conn.execute(
        "SELECT u.id, u.username, u.role, u.state,"
        " coalesce(array_agg(ug.group_id) FILTER (WHERE ug.group_id IS NOT NULL), '{}')"
        " FROM users u LEFT JOIN user_groups ug ON ug.user_id = u.id"
        " WHERE u.id = %s GROUP BY u.id",
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    return PrincipalRow(int(row[0]), row[1], row[2], row[3], frozenset(int(g) for g in row[4]))


def user_group_ids(conn: psycopg.Connection[Any], user_id: int) -> frozenset[int]:
    rows = conn.execute("SELECT group_id FROM user_groups WHERE user_id = %s", (user_id,))
    return frozenset(int(r[0]) for r in rows.fetchall())


def set_user_groups(
    conn: psycopg.Connection[Any], user_id: int, group_ids: Sequence[int]
) -> frozenset[int]:
    """Replace the groups that scope a user; raises ``NotFound`` for an unknown user or group."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is None:
            raise NotFound(f"no user with id {user_id}")
        wanted = sorted(set(group_ids))
        known = {
            int(r[0])
            for r in conn.execute("SELECT id FROM groups WHERE id = ANY(%s)", (wanted,)).fetchall()
        }
        missing = [g for g in wanted if g not in known]
        if missing:
            raise NotFound(f"no group with id {', '.join(map(str, missing))}")
        conn.execute("DELETE FROM user_groups WHERE user_id = %s", (user_id,))
        if wanted:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO user_groups (user_id, group_id) VALUES (%s, %s)",
                    [(user_id, g) for g in wanted],
                )
    return frozenset(wanted)


def visible_host_ids(conn: psycopg.Connection[Any], scope: HostScope) -> set[int]:
    """Every host id ``scope`` admits (the relay's per-subscriber filter)."""
    query = sql.SQL("SELECT h.id FROM hosts h WHERE {c}").format(c=scope_condition(scope, "h.id"))
    return {int(r[0]) for r in conn.execute(query).fetchall()}


def hosts_outside(
    conn: psycopg.Connection[Any], host_ids: Sequence[int], scope: HostScope
) -> list[int]:
    """Those of ``host_ids`` that exist but ``scope`` does not admit, plus unknown ids: the ids
    a principal may not name (either way they answer "no such host")."""
    if scope.all_hosts:
        known = {
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM hosts WHERE id = ANY(%s)", (list(host_ids),)
            ).fetchall()
        }
    else:
        query = sql.SQL("SELECT h.id FROM hosts h WHERE h.id = ANY(%s) AND {c}").format(
            c=scope_condition(scope, "h.id")
        )
        known = {int(r[0]) for r in conn.execute(query, (list(host_ids),)).fetchall()}
    return [i for i in dict.fromkeys(host_ids) if i not in known]


def session_active(
    conn: psycopg.Connection[Any], token_hash: bytes, idle_timeout: dt.timedelta | None = None
) -> bool:
    """Whether the session of this token still stands (not ended, expired, rotated or, given
    ``idle_timeout``, idle too long): open relay sockets check it when scopes change and
    periodically."""
    row = conn.execute(
        "SELECT 1 FROM sessions WHERE token_hash = %s AND expires_at > now()"
        " AND rotated_at IS NULL"
        " AND (%s::interval IS NULL OR last_seen_at > now() - %s::interval)",
        (token_hash, idle_timeout, idle_timeout),
    ).fetchone()
    return row is not None


# -- session and membership changes made by other processes (the CLI) -----------------------

SCOPE_CHANNEL = "scope_changed"


def notify_scope_changed(conn: psycopg.Connection[Any]) -> None:
    """Tell the running web server that users' roles, groups, states or sessions changed (the
    CLI does, after its change has committed): its open relay sockets re-check at once."""
    conn.execute("SELECT pg_notify(%s, '')", (SCOPE_CHANNEL,))


class ScopeChangeListener:
    """A dedicated autocommit connection LISTENing on ``scope_changed``. Blocking: call its
    methods from a worker thread. ``DatabaseUnavailable`` when the database cannot be
    reached or the connection drops."""

    def __init__(self, conninfo: str) -> None:
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {SCOPE_CHANNEL}")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"cannot LISTEN for scope changes: {first}") from exc

    def wait(self, timeout: float = 1.0) -> int:
        """How many notifications arrived within ``timeout`` seconds (at most one batch)."""
        try:
            return len(list(self._conn.notifies(timeout=timeout, stop_after=1)))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"scope change notifications interrupted: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
