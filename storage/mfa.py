"""Second factors of local accounts (R-7.2): TOTP secrets (sealed elsewhere: only the sealed
text comes here) with the time steps already used, hashed single-use recovery codes, WebAuthn
credentials with their signature counters, and the pending logins between a correct password
and the second factor. Resetting a user's factors ends the user's sessions in the same
transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import Conflict, NotFound
from .users import _end_sessions

# Used TOTP steps older than this many steps behind the newest are forgotten (a code is only
# ever accepted within one step of now, so they can no longer be replayed).
KEEP_STEPS = 10


@dataclass(frozen=True)
class Credential:
    """A WebAuthn authenticator of a user."""

    id: int
    user_id: int
    credential_id: bytes
    public_key: bytes
    sign_count: int
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class Factors:
    """What second factors a user has."""

    totp: bool
    totp_pending: bool  # a secret is waiting for its first code
    credentials: list[Credential]
    recovery_left: int

    @property
    def any(self) -> bool:
        return self.totp or bool(self.credentials)


@dataclass(frozen=True)
class PendingLogin:
    user_id: int
    address: str
    user_agent: str
    next_path: str
    challenge: bytes | None
    attempts: int


# -- TOTP -----------------------------------------------------------------------------------


def totp_secret(conn: psycopg.Connection[Any], user_id: int) -> tuple[str, bool] | None:
    """(sealed secret, confirmed) of the user's TOTP, or None."""
    row = conn.execute(
        "SELECT secret_sealed, confirmed_at IS NOT NULL FROM mfa_totp WHERE user_id = %s",
        (user_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def begin_totp(conn: psycopg.Connection[Any], user_id: int, sealed: str) -> None:
    """Store a new unconfirmed secret (replacing an unconfirmed one; ``Conflict`` when the user
    has a confirmed TOTP already)."""
    row = conn.execute(
        "INSERT INTO mfa_totp (user_id, secret_sealed) VALUES (%s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed,"
        " created_at = now() WHERE mfa_totp.confirmed_at IS NULL RETURNING user_id",
        (user_id, sealed),
    ).fetchone()
    if row is None:
        raise Conflict("an authenticator app is enrolled already; remove it first")


def confirm_totp(
    conn: psycopg.Connection[Any], user_id: int, session_hash: bytes | None = None
) -> bool:
    """The TOTP secret becomes a factor; the user's password-only sessions end (but
    ``session_hash``'s, which counts as proven) in the same transaction."""
    confirmed = (
        conn.execute(
            "UPDATE mfa_totp SET confirmed_at = now() WHERE user_id = %s AND confirmed_at IS NULL",
            (user_id,),
        ).rowcount
        == 1
    )
    if confirmed:
        _end_password_only_sessions(conn, user_id, session_hash)
    return confirmed


def _end_password_only_sessions(
    conn: psycopg.Connection[Any], user_id: int, session_hash: bytes | None
) -> None:
    """A factor was added: the enrolling session (``session_hash``) counts as proven; every
    other session of the user without a proven factor ends (it could enrol a factor of its
    own or change the password)."""
    if session_hash is not None:
        conn.execute(
            "UPDATE sessions SET mfa_at = now() WHERE token_hash = %s AND user_id = %s",
            (session_hash, user_id),
        )
    # the enrolling session's family keeps its rotated tokens: reusing one still revokes it
    conn.execute(
        "DELETE FROM sessions WHERE user_id = %s AND mfa_at IS NULL AND family_id IS DISTINCT"
        " FROM (SELECT family_id FROM sessions WHERE token_hash = %s)",
        (user_id, session_hash),
    )


def enrol_totp(conn: psycopg.Connection[Any], user_id: int, sealed: str) -> None:
    """A confirmed TOTP secret at once (the demo's known secret; test rigs)."""
    conn.execute(
        "INSERT INTO mfa_totp (user_id, secret_sealed, confirmed_at) VALUES (%s, %s, now())"
        " ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed,"
        " created_at = now(), confirmed_at = now()",
        (user_id, sealed),
    )
    conn.execute("DELETE FROM mfa_totp_used WHERE user_id = %s", (user_id,))


def use_totp_step(conn: psycopg.Connection[Any], user_id: int, step: int) -> bool:
    """Record that the code of ``step`` was accepted; False when it had been already (a
    replay)."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO mfa_totp_used (user_id, step) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING RETURNING step",
            (user_id, step),
        ).fetchone()
        conn.execute(
            "DELETE FROM mfa_totp_used WHERE user_id = %s AND step < %s",
            (user_id, step - KEEP_STEPS),
        )
    return row is not None


def remove_totp(conn: psycopg.Connection[Any], user_id: int) -> bool:
    """Delete the user's authenticator app; ``LastFactor`` (nothing deleted) when it was the
    user's last factor (see ``_keep_one``)."""
    _lock_user(conn, user_id)
    removed = conn.execute("DELETE FROM mfa_totp WHERE user_id = %s", (user_id,)).rowcount == 1
    _keep_one(conn, user_id)
    return removed


class LastFactor(Conflict):
    """Removing this factor would leave the user without one (a second factor is mandatory)."""


def _lock_user(conn: psycopg.Connection[Any], user_id: int) -> None:
    """Serialise the user's factor removals: each waits for the user's row."""
    conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))


def _keep_one(conn: psycopg.Connection[Any], user_id: int) -> None:
    """After a removal under ``_lock_user``: ``LastFactor`` (the caller's transaction rolls
    back) when no factor is left."""
    if not has_factor(conn, user_id):
        raise LastFactor("add another factor first: a second factor is mandatory")


# -- recovery codes -------------------------------------------------------------------------


def replace_recovery_codes(
    conn: psycopg.Connection[Any], user_id: int, hashes: list[bytes]
) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM mfa_recovery_codes WHERE user_id = %s", (user_id,))
        conn.execute(
            "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT %s, unnest(%s::bytea[])",
            (user_id, hashes),
        )


def use_recovery_code(conn: psycopg.Connection[Any], user_id: int, code_hash: bytes) -> bool:
    """True once per unused code of the user."""
    return (
        conn.execute(
            "UPDATE mfa_recovery_codes SET used_at = now()"
            " WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
            (user_id, code_hash),
        ).rowcount
        == 1
    )


# -- WebAuthn -------------------------------------------------------------------------------

_CREDENTIAL = (
    "SELECT id, user_id, credential_id, public_key, sign_count, name, created_at, last_used_at"
    " FROM webauthn_credentials"
)


def _credential(row: Any) -> Credential:
    return Credential(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]),
                      row[5], row[6], row[7])  # fmt: skip


def credentials_of(conn: psycopg.Connection[Any], user_id: int) -> list[Credential]:
    rows = conn.execute(_CREDENTIAL + " WHERE user_id = %s ORDER BY id", (user_id,)).fetchall()
    return [_credential(r) for r in rows]


def credential_by_id(conn: psycopg.Connection[Any], credential_id: bytes) -> Credential | None:
    row = conn.execute(_CREDENTIAL + " WHERE credential_id = %s", (credential_id,)).fetchone()
    return None if row is None else _credential(row)


def add_credential(
    conn: psycopg.Connection[Any],
    user_id: int,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
    name: str,
    session_hash: bytes | None = None,
) -> Credential:
    """``Conflict`` when the name (for this user) or the credential is registered already.
    The user's password-only sessions end but ``session_hash``'s (see ``confirm_totp``)."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO webauthn_credentials (user_id, credential_id, public_key,"
                " sign_count, name) VALUES (%s, %s, %s, %s, %s)"
                " RETURNING id, user_id, credential_id, public_key, sign_count, name,"
                " created_at, last_used_at",
                (user_id, credential_id, public_key, sign_count, name),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict("this authenticator or its name is registered already") from None
    assert row is not None
    _end_password_only_sessions(conn, user_id, session_hash)
    return _credential(row)


def update_sign_count(
    conn: psycopg.Connection[Any], credential_row: int, old: int, new: int
) -> bool:
    """Store the new counter when it is still ``old`` (False: a concurrent use won)."""
    return (
        conn.execute(
            "UPDATE webauthn_credentials SET sign_count = %s, last_used_at = now()"
            " WHERE id = %s AND sign_count = %s",
            (new, credential_row, old),
        ).rowcount
        == 1
    )


def remove_credential(conn: psycopg.Connection[Any], user_id: int, credential_row: int) -> str:
    """Delete one authenticator of the user; returns its name (``NotFound``; ``LastFactor``
    when it was the user's last factor)."""
    _lock_user(conn, user_id)
    row = conn.execute(
        "DELETE FROM webauthn_credentials WHERE id = %s AND user_id = %s RETURNING name",
        (credential_row, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"no authenticator with id {credential_row}")
    _keep_one(conn, user_id)
    return str(row[0])


# -- all factors ----------------------------------------------------------------------------


def factors(conn: psycopg.Connection[Any], user_id: int) -> Factors:
    row = conn.execute(
        "SELECT (SELECT confirmed_at IS NOT NULL FROM mfa_totp WHERE user_id = %s),"
        " (SELECT count(*) FROM mfa_recovery_codes WHERE user_id = %s AND used_at IS NULL)",
        (user_id, user_id),
    ).fetchone()
    assert row is not None
    return Factors(
        totp=bool(row[0]),
        totp_pending=row[0] is False,
        credentials=credentials_of(conn, user_id),
        recovery_left=int(row[1]),
    )


def has_factor(conn: psycopg.Connection[Any], user_id: int) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = %s AND confirmed_at IS NOT NULL)"
        " OR EXISTS (SELECT 1 FROM webauthn_credentials WHERE user_id = %s)",
        (user_id, user_id),
    ).fetchone()
    return bool(row and row[0])


def reset_factors(conn: psycopg.Connection[Any], user_id: int, *, by: str) -> int:
    """Remove every second factor of a user (an admin's reset) and end the user's sessions:
    the next login enrols again. Returns the number of sessions ended (``NotFound``)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE users SET updated_by = %s, updated_at = now() WHERE id = %s RETURNING id",
            (by, user_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no user with id {user_id}")
        for table in ("mfa_totp", "mfa_totp_used", "mfa_recovery_codes", "webauthn_credentials",
                      "pending_logins"):  # fmt: skip
            conn.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))
        return _end_sessions(conn, user_id)


# -- sessions -------------------------------------------------------------------------------


def mark_session_mfa(conn: psycopg.Connection[Any], token_hash: bytes) -> None:
    """The session has just proved a second factor (enrolment, re-authentication)."""
    conn.execute("UPDATE sessions SET mfa_at = now() WHERE token_hash = %s", (token_hash,))


# -- pending logins -------------------------------------------------------------------------


def create_pending(
    conn: psycopg.Connection[Any],
    token_hash: bytes,
    user_id: int,
    expires_at: dt.datetime,
    *,
    address: str = "",
    user_agent: str = "",
    next_path: str = "/",
) -> None:
    conn.execute(
        "INSERT INTO pending_logins (token_hash, user_id, address, user_agent, next_path,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (token_hash, user_id, address[:100], user_agent[:300], next_path[:2000], expires_at),
    )


_PENDING = "user_id, address, user_agent, next_path, challenge, attempts"


def _pending(row: Any) -> PendingLogin:
    return PendingLogin(int(row[0]), row[1], row[2], row[3],
                        None if row[4] is None else bytes(row[4]), int(row[5]))  # fmt: skip


def load_pending(conn: psycopg.Connection[Any], token_hash: bytes) -> PendingLogin | None:
    row = conn.execute(
        f"SELECT {_PENDING} FROM pending_logins WHERE token_hash = %s AND expires_at > now()",
        (token_hash,),
    ).fetchone()
    return None if row is None else _pending(row)


def attempt_pending(
    conn: psycopg.Connection[Any], token_hash: bytes, max_attempts: int
) -> PendingLogin | None:
    """Count one second-factor attempt of a live pending login; None when it is gone, expired
    or out of attempts (then it is deleted: the password must be given again)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE pending_logins SET attempts = attempts + 1 WHERE token_hash = %s"
            f" AND expires_at > now() AND attempts < %s RETURNING {_PENDING}",
            (token_hash, max_attempts),
        ).fetchone()
        if row is None:
            conn.execute("DELETE FROM pending_logins WHERE token_hash = %s", (token_hash,))
            return None
    return _pending(row)


def set_pending_challenge(
    conn: psycopg.Connection[Any], token_hash: bytes, challenge: bytes
) -> bool:
    return (
        conn.execute(
            "UPDATE pending_logins SET challenge = %s WHERE token_hash = %s AND expires_at > now()",
            (challenge, token_hash),
        ).rowcount
        == 1
    )


def consume_pending(conn: psycopg.Connection[Any], token_hash: bytes) -> PendingLogin | None:
    """Single use: the pending login, deleted; None when another request consumed it."""
    row = conn.execute(
        f"DELETE FROM pending_logins WHERE token_hash = %s AND expires_at > now()"
        f" RETURNING {_PENDING}",
        (token_hash,),
    ).fetchone()
    return None if row is None else _pending(row)


def prune_pending(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("DELETE FROM pending_logins WHERE expires_at < now()").rowcount
