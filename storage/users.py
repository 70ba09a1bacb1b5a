"""Users and server-side sessions. Hashing happens elsewhere: only hashes come here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import Conflict, NotFound


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    role: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: dt.datetime
    last_seen_at: dt.datetime


def count_users(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def create_user(
    conn: psycopg.Connection[Any], username: str, password_hash: str, role: str = "admin"
) -> User:
    try:
        row = conn.execute(
            "INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s) RETURNING id",
            (username, password_hash, role),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"user {username!r} exists") from None
    assert row is not None
    return User(int(row[0]), username, password_hash, role)


def get_user(conn: psycopg.Connection[Any], username: str) -> User | None:
    row = conn.execute(
        "SELECT id, username, password_hash, role FROM users WHERE username = %s", (username,)
    ).fetchone()
    return None if row is None else User(*row)


def set_password(conn: psycopg.Connection[Any], username: str, password_hash: str) -> None:
    """Change a password; every session of the user ends."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE users SET password_hash = %s, password_changed_at = now()"
            " WHERE username = %s RETURNING id",
            (password_hash, username),
        ).fetchone()
        if row is None:
            raise NotFound(f"no user {username!r}")
        conn.execute("DELETE FROM sessions WHERE user_id = %s", (row[0],))


def create_session(
    conn: psycopg.Connection[Any],
    token_hash: bytes,
    user_id: int,
    csrf_token: str,
    expires_at: dt.datetime,
) -> None:
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at)"
        " VALUES (%s, %s, %s, %s)",
        (token_hash, user_id, csrf_token, expires_at),
    )


SLIDE_EVERY = dt.timedelta(minutes=1)


def load_session(
    conn: psycopg.Connection[Any], token_hash: bytes, idle_timeout: dt.timedelta
) -> Session | None:
    """The live session for a token, or None if unknown/expired. The idle timeout slides,
    written at most once a minute (not on every request)."""
    row = conn.execute(
        "SELECT u.id, u.username, u.password_hash, u.role, s.csrf_token, s.expires_at,"
        " s.last_seen_at, s.last_seen_at < now() - %s FROM sessions s"
        " JOIN users u ON u.id = s.user_id"
        " WHERE s.token_hash = %s AND s.expires_at > now() AND s.last_seen_at > now() - %s",
        (SLIDE_EVERY, token_hash, idle_timeout),
    ).fetchone()
    if row is None:
        return None
    if row[7]:
        conn.execute("UPDATE sessions SET last_seen_at = now() WHERE token_hash = %s",
                     (token_hash,))  # fmt: skip
    return Session(User(row[0], row[1], row[2], row[3]), row[4], row[5], row[6])


def delete_session(conn: psycopg.Connection[Any], token_hash: bytes) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = %s", (token_hash,))


def prune_sessions(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("DELETE FROM sessions WHERE expires_at < now()").rowcount
