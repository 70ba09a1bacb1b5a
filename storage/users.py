"""Users, their group scope, lockout counters and server-side sessions.

Hashing happens elsewhere: only hashes come here. User names are stored lower-case (the schema
refuses anything else), so uniqueness is case-insensitive. Every change of a user's password,
role, groups or state ends that user's sessions in the same transaction (R-7.3); the last active
admin can be neither disabled nor demoted (``LastAdmin``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import Conflict, NotFound

ROLES = ("admin", "operator", "auditor")
USER_STATES = ("active", "disabled")


class LastAdmin(Conflict):
    """The change would leave no active admin."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    role: str
    state: str = "active"
    must_change_password: bool = False
    group_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class UserItem:
    """A user as the Users page and the API show it (no hash)."""

    id: int
    username: str
    role: str
    state: str
    must_change_password: bool
    failed_logins: int
    locked_until: dt.datetime | None
    groups: list[str]
    group_ids: list[int]
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str
    sessions: int


@dataclass(frozen=True)
class LoginRecord:
    """What a login attempt needs to know about the account it names."""

    user: User
    locked_until: dt.datetime | None


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: dt.datetime
    last_seen_at: dt.datetime
    id: int = 0
    family_id: str = ""
    rotated: bool = False
    mfa_at: dt.datetime | None = None  # when it last proved a second factor (None: never)


@dataclass(frozen=True)
class SessionItem:
    """A live session as its owner and admins see it."""

    id: int
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    address: str
    user_agent: str


_USER = (
    "SELECT u.id, u.username, u.password_hash, u.role, u.state, u.must_change_password,"
    " coalesce((SELECT array_agg(ug.group_id ORDER BY ug.group_id) FROM user_groups ug"
    " WHERE ug.user_id = u.id), '{}') FROM users u"
)


def _user(row: Any) -> User:
    return User(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]), tuple(row[6]))


def count_users(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def create_user(
    conn: psycopg.Connection[Any],
    username: str,
    password_hash: str,
    role: str = "admin",
    *,
    must_change_password: bool = False,
    group_ids: tuple[int, ...] = (),
    created_by: str = "",
) -> User:
    """Insert a user (``Conflict`` when the name is taken in any case; ``NotFound`` when a
    group does not exist)."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO users (username, password_hash, role, must_change_password,"
                " created_by, updated_by) VALUES (lower(%s), %s, %s, %s, %s, %s) RETURNING id",
                (username, password_hash, role, must_change_password, created_by, created_by),
            ).fetchone()
            assert row is not None
            _write_groups(conn, int(row[0]), group_ids)
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"user {username.lower()!r} exists") from None
    return User(int(row[0]), username.lower(), password_hash, role, "active",
                must_change_password, tuple(sorted(set(group_ids))))  # fmt: skip


def _write_groups(conn: psycopg.Connection[Any], user_id: int, group_ids: tuple[int, ...]) -> None:
    conn.execute("DELETE FROM user_groups WHERE user_id = %s", (user_id,))
    if not group_ids:
        return
    wanted = sorted(set(group_ids))
    found = conn.execute("SELECT id FROM groups WHERE id = ANY(%s)", (wanted,)).fetchall()
    missing = set(wanted) - {int(r[0]) for r in found}
    if missing:
        raise NotFound(f"no group with id {min(missing)}")
    conn.execute(
        "INSERT INTO user_groups (user_id, group_id) SELECT %s, unnest(%s::bigint[])",
        (user_id, wanted),
    )


def get_user(conn: psycopg.Connection[Any], username: str) -> User | None:
    row = conn.execute(_USER + " WHERE u.username = lower(%s)", (username,)).fetchone()
    return None if row is None else _user(row)


def get_user_by_id(conn: psycopg.Connection[Any], user_id: int) -> User | None:
    row = conn.execute(_USER + " WHERE u.id = %s", (user_id,)).fetchone()
    return None if row is None else _user(row)


def login_record(conn: psycopg.Connection[Any], username: str) -> LoginRecord | None:
    row = conn.execute(
        _USER.replace(" FROM users u", ", u.locked_until FROM users u")
        + " WHERE u.username = lower(%s)",
        (username,),
    ).fetchone()
    return None if row is None else LoginRecord(_user(row), row[7])


def record_failed_login(
    conn: psycopg.Connection[Any], user_id: int, threshold: int, lock_for: dt.timedelta
) -> dt.datetime | None:
    """Count one wrong password; at ``threshold`` failures in a row the account is locked for
    ``lock_for`` (a lock already running is not extended). A lock that has run out starts the
    count again: this failure is the first of a new series. Returns ``locked_until``."""
    row = conn.execute(
        "UPDATE users SET failed_logins = CASE WHEN locked_until < now() THEN 1"
        " ELSE failed_logins + 1 END,"
        " locked_until = CASE"
        " WHEN locked_until < now() THEN CASE WHEN 1 >= %s THEN now() + %s END"
        " WHEN locked_until IS NULL AND failed_logins + 1 >= %s THEN now() + %s"
        " ELSE locked_until END WHERE id = %s RETURNING locked_until",
        (threshold, lock_for, threshold, lock_for, user_id),
    ).fetchone()
    return None if row is None else row[0]


def record_login(conn: psycopg.Connection[Any], user_id: int) -> None:
    """A correct password on an unlocked account: the failure count starts again."""
    conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL"
        " WHERE id = %s AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        (user_id,),
    )


def list_users(conn: psycopg.Connection[Any], user_id: int | None = None) -> list[UserItem]:
    rows = conn.execute(
        "SELECT u.id, u.username, u.role, u.state, u.must_change_password, u.failed_logins,"
        " CASE WHEN u.locked_until > now() THEN u.locked_until END,"
        " coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.id IS NOT NULL), '{}'),"
        " coalesce(array_agg(g.id ORDER BY g.name) FILTER (WHERE g.id IS NOT NULL), '{}'),"
        " u.created_at, u.created_by, u.updated_at, u.updated_by,"
        " (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.rotated_at IS NULL"
        "  AND s.expires_at > now())"
        " FROM users u LEFT JOIN user_groups ug ON ug.user_id = u.id"
        " LEFT JOIN groups g ON g.id = ug.group_id"
        " WHERE %s::bigint IS NULL OR u.id = %s"
        " GROUP BY u.id ORDER BY u.username",
        (user_id, user_id),
    ).fetchall()
    return [
        UserItem(
            int(r[0]),
            r[1],
            r[2],
            r[3],
            bool(r[4]),
            int(r[5]),
            r[6],
            list(r[7]),
            [int(x) for x in r[8]],
            r[9],
            r[10],
            r[11],
            r[12],
            int(r[13]),
        )  # fmt: skip
        for r in rows
    ]


def _locked_target(conn: psycopg.Connection[Any], user_id: int) -> tuple[str, str]:
    """Lock the active admins' rows (so two concurrent demotions cannot both pass the last-admin
    check) and return the target's (role, state)."""
    conn.execute("SELECT id FROM users WHERE role = 'admin' AND state = 'active' FOR UPDATE")
    row = conn.execute(
        "SELECT role, state FROM users WHERE id = %s FOR UPDATE", (user_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    return row[0], row[1]


def _other_active_admins(conn: psycopg.Connection[Any], user_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM users WHERE role = 'admin' AND state = 'active' AND id <> %s",
        (user_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def update_user(
    conn: psycopg.Connection[Any],
    user_id: int,
    *,
    by: str,
    role: str | None = None,
    state: str | None = None,
    group_ids: tuple[int, ...] | None = None,
) -> int:
    """Change role, state and/or groups; the user's sessions end when anything changed.
    Raises ``NotFound``, ``LastAdmin``. Returns the number of sessions ended."""
    with conn.transaction():
        old_role, old_state = _locked_target(conn, user_id)
        new_role, new_state = role or old_role, state or old_state
        was_admin = old_role == "admin" and old_state == "active"
        demoted = new_role != "admin" or new_state != "active"
        if was_admin and demoted and _other_active_admins(conn, user_id) == 0:
            raise LastAdmin("the last active admin cannot be disabled or demoted")
        changed = (new_role, new_state) != (old_role, old_state)
        if group_ids is not None:
            before = conn.execute(
                "SELECT coalesce(array_agg(group_id ORDER BY group_id), '{}') FROM user_groups"
                " WHERE user_id = %s",
                (user_id,),
            ).fetchone()
            if before is None or list(before[0]) != sorted(set(group_ids)):
                _write_groups(conn, user_id, group_ids)
                changed = True
        if not changed:
            return 0
        conn.execute(
            "UPDATE users SET role = %s, state = %s, updated_by = %s, updated_at = now()"
            " WHERE id = %s",
            (new_role, new_state, by, user_id),
        )
        return _end_sessions(conn, user_id)


def unlock_user(conn: psycopg.Connection[Any], user_id: int, *, by: str) -> None:
    row = conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL, updated_by = %s,"
        " updated_at = now() WHERE id = %s RETURNING id",
        (by, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"no user with id {user_id}")


def set_password(
    conn: psycopg.Connection[Any],
    username: str,
    password_hash: str,
    *,
    must_change: bool = False,
    by: str = "",
    keep_family: str = "",
) -> int:
    """Change a password. Every session of the user ends, except the family ``keep_family``
    (the browser that made the change, which rotates its token next). Also clears the lockout.
    Returns the user's id."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE users SET password_hash = %s, password_changed_at = now(),"
            " must_change_password = %s, failed_logins = 0, locked_until = NULL,"
            " updated_by = CASE WHEN %s = '' THEN updated_by ELSE %s END, updated_at = now()"
            " WHERE username = lower(%s) RETURNING id",
            (password_hash, must_change, by, by, username),
        ).fetchone()
        if row is None:
            raise NotFound(f"no user {username!r}")
        user_id = int(row[0])
        if keep_family:
            conn.execute(
                "DELETE FROM sessions WHERE user_id = %s AND family_id <> %s::uuid",
                (user_id, keep_family),
            )
        else:
            _end_sessions(conn, user_id)
    return user_id


def _end_sessions(conn: psycopg.Connection[Any], user_id: int) -> int:
    row = conn.execute(
        "WITH gone AS (DELETE FROM sessions WHERE user_id = %s RETURNING rotated_at, expires_at)"
        " SELECT count(*) FILTER (WHERE rotated_at IS NULL AND expires_at > now()) FROM gone",
        (user_id,),
    ).fetchone()
    return int(row[0]) if row else 0


# -- sessions -------------------------------------------------------------------------------


def create_session(
    conn: psycopg.Connection[Any],
    token_hash: bytes,
    user_id: int,
    csrf_token: str,
    expires_at: dt.datetime,
    address: str = "",
    user_agent: str = "",
    *,
    mfa: bool = False,
) -> None:
    """A new session in a new family (a login); ``mfa``: a second factor was just proven."""
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at, address, user_agent,"
        " mfa_at) VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)",
        (token_hash, user_id, csrf_token, expires_at, address[:100], user_agent[:300], mfa),
    )


def rotate_session(
    conn: psycopg.Connection[Any], old_hash: bytes, new_hash: bytes, csrf_token: str
) -> bool:
    """Replace a live session's token by a new one in the same family (same expiry); the old
    row stays, marked rotated, so that presenting it again is recognised as reuse. False when
    the old session is gone (revoked meanwhile)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE sessions SET rotated_at = now() WHERE token_hash = %s"
            " AND rotated_at IS NULL AND expires_at > now()"
            " RETURNING user_id, family_id, expires_at, address, user_agent, created_at, mfa_at",
            (old_hash, ),
        ).fetchone()  # fmt: skip
        if row is None:
            return False
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at, family_id,"
            " address, user_agent, created_at, mfa_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (new_hash, row[0], csrf_token, row[2], row[1], row[3], row[4], row[5], row[6]),
        )
    return True


SLIDE_EVERY = dt.timedelta(minutes=1)


def load_session(
    conn: psycopg.Connection[Any], token_hash: bytes, idle_timeout: dt.timedelta
) -> Session | None:
    """The session for a token, or None if unknown, expired, idle too long or its user is
    disabled. A rotated session comes back with ``rotated`` set (the caller revokes its
    family) until it expires: its last_seen_at stopped at the rotation, so the idle timeout
    does not apply to it (reuse hours later is still detected). The idle timeout slides,
    written at most once a minute (not on every request)."""
    row = conn.execute(
        "SELECT u.id, u.username, u.password_hash, u.role, u.state, u.must_change_password,"
        " coalesce((SELECT array_agg(ug.group_id ORDER BY ug.group_id) FROM user_groups ug"
        " WHERE ug.user_id = u.id), '{}'),"
        " s.csrf_token, s.expires_at, s.last_seen_at, s.last_seen_at < now() - %s,"
        " s.id, s.family_id::text, s.rotated_at IS NOT NULL, s.mfa_at FROM sessions s"
        " JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = %s AND s.expires_at > now()"
        " AND (s.rotated_at IS NOT NULL OR s.last_seen_at > now() - %s)"
        " AND u.state = 'active'",
        (SLIDE_EVERY, token_hash, idle_timeout),
    ).fetchone()
    if row is None:
        return None
    if row[10] and not row[13]:
        conn.execute("UPDATE sessions SET last_seen_at = now() WHERE token_hash = %s",
                     (token_hash,))  # fmt: skip
    return Session(
        _user(row), row[7], row[8], row[9], int(row[11]), row[12], bool(row[13]), row[14]
    )


def revoke_family(conn: psycopg.Connection[Any], family_id: str) -> int:
    try:
        uuid.UUID(family_id)
    except ValueError:
        return 0
    return conn.execute("DELETE FROM sessions WHERE family_id = %s::uuid", (family_id,)).rowcount


def family_address(conn: psycopg.Connection[Any], family_id: str) -> str:
    """The source address the session family logged in from ('' when unknown)."""
    try:
        uuid.UUID(family_id)
    except ValueError:
        return ""
    row = conn.execute(
        "SELECT address FROM sessions WHERE family_id = %s::uuid ORDER BY created_at LIMIT 1",
        (family_id,),
    ).fetchone()
    return str(row[0] or "") if row else ""


def list_sessions(conn: psycopg.Connection[Any], user_id: int) -> list[SessionItem]:
    rows = conn.execute(
        "SELECT id, created_at, last_seen_at, expires_at, address, user_agent FROM sessions"
        " WHERE user_id = %s AND rotated_at IS NULL AND expires_at > now()"
        " ORDER BY last_seen_at DESC",
        (user_id,),
    ).fetchall()
    return [SessionItem(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


def revoke_session(conn: psycopg.Connection[Any], user_id: int, session_id: int) -> None:
    """End one session of ``user_id`` (its whole family). ``NotFound`` if there is none."""
    row = conn.execute(
        "SELECT family_id::text FROM sessions WHERE id = %s AND user_id = %s"
        " AND rotated_at IS NULL AND expires_at > now()",
        (session_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"no session with id {session_id}")
    revoke_family(conn, row[0])


def revoke_sessions(conn: psycopg.Connection[Any], user_id: int) -> int:
    """End every session of a user; returns how many live ones there were."""
    with conn.transaction():
        return _end_sessions(conn, user_id)


def delete_session(conn: psycopg.Connection[Any], token_hash: bytes) -> None:
    """Log out: the whole family ends (its rotated predecessors too)."""
    conn.execute(
        "DELETE FROM sessions WHERE family_id IN"
        " (SELECT family_id FROM sessions WHERE token_hash = %s)",
        (token_hash,),
    )


def prune_sessions(conn: psycopg.Connection[Any], idle_timeout: dt.timedelta | None = None) -> int:
    """Delete expired (and, given ``idle_timeout``, idle) sessions and expired login-form
    tokens; returns the number of sessions deleted. Rotated rows go only when they expire:
    they are what detects the reuse of a copied token."""
    count = conn.execute(
        "DELETE FROM sessions WHERE expires_at < now()"
        " OR (%s::interval IS NOT NULL AND rotated_at IS NULL"
        " AND last_seen_at < now() - %s::interval)",
        (idle_timeout, idle_timeout),
    ).rowcount
    conn.execute("DELETE FROM login_tokens WHERE expires_at < now()")
    return count


# -- login-form tokens ----------------------------------------------------------------------


def issue_login_token(
    conn: psycopg.Connection[Any], token_hash: bytes, expires_at: dt.datetime
) -> None:
    conn.execute(
        "INSERT INTO login_tokens (token_hash, expires_at) VALUES (%s, %s)",
        (token_hash, expires_at),
    )


def consume_login_token(conn: psycopg.Connection[Any], token_hash: bytes) -> bool:
    """True once for a token that was issued and has not expired; False ever after."""
    row = conn.execute(
        "DELETE FROM login_tokens WHERE token_hash = %s RETURNING expires_at > now()",
        (token_hash,),
    ).fetchone()
    return bool(row and row[0])
