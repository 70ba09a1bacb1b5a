"""API tokens, their refresh-token families and the JWT signing keys (R-7.3, R-7.6).

Only hashes of tokens are stored. What a token may do is decided by the web layer from the facts
loaded here: the token row (scope, expiry, revocation, group restriction) and its owner's
current role, state and groups, read together in one query on every use.

Times that decide validity (``now``) are passed in by the caller, so that a test can move its
clock; the database's clock only stamps creation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import NotFound

TOKEN_COLUMNS = (
    "t.id, t.user_id, u.username, t.name, t.scope, t.hint, t.restricted,"
    " coalesce((SELECT array_agg(g.group_id ORDER BY g.group_id) FROM api_token_groups g"
    " WHERE g.token_id = t.id), '{}'),"
    " t.created_at, t.created_by, t.expires_at, t.last_used_at, t.revoked_at"
)


@dataclass(frozen=True)
class TokenItem:
    """A token as listed (never its secret)."""

    id: int
    user_id: int
    username: str
    name: str
    scope: str
    hint: str
    restricted: bool
    group_ids: tuple[int, ...]
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class TokenUse:
    """A presented token with its owner as stored now (``owner_role``/``owner_state`` as
    stored; the web layer maps them to rights)."""

    token: TokenItem
    owner_role: str
    owner_state: str
    owner_group_ids: frozenset[int]
    must_change_password: bool
    family_revoked: bool = False
    sso_off: bool = False  # the owner signs in only through single sign-on, which is off


def _item(row: Any) -> TokenItem:
    return TokenItem(
        int(row[0]), int(row[1]), row[2], row[3], row[4], row[5], bool(row[6]),
        tuple(int(g) for g in row[7]), row[8], row[9], row[10], row[11], row[12],
    )  # fmt: skip


def create_token(
    conn: psycopg.Connection[Any],
    *,
    user_id: int,
    name: str,
    scope: str,
    token_hash: bytes,
    hint: str,
    expires_at: dt.datetime,
    group_ids: Sequence[int] | None,
    by: str,
) -> TokenItem:
    """Store a new token of ``user_id``; ``group_ids`` None means unrestricted. Raises
    ``NotFound`` for an unknown user or group."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is None:
            raise NotFound(f"no user with id {user_id}")
        wanted = sorted(set(group_ids or ()))
        known = {
            int(r[0])
            for r in conn.execute("SELECT id FROM groups WHERE id = ANY(%s)", (wanted,)).fetchall()
        }
        missing = [g for g in wanted if g not in known]
        if missing:
            raise NotFound(f"no group with id {', '.join(map(str, missing))}")
        row = conn.execute(
            "INSERT INTO api_tokens (user_id, name, scope, token_hash, hint, restricted,"
            " expires_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (user_id, name, scope, token_hash, hint, group_ids is not None, expires_at, by),
        ).fetchone()
        assert row is not None
        token_id = int(row[0])
        if wanted:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO api_token_groups (token_id, group_id) VALUES (%s, %s)",
                    [(token_id, g) for g in wanted],
                )
        item = get_token(conn, token_id)
    assert item is not None
    return item


def get_token(conn: psycopg.Connection[Any], token_id: int) -> TokenItem | None:
    row = conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.id = %s",
        (token_id,),
    ).fetchone()
    return _item(row) if row else None


def list_tokens(conn: psycopg.Connection[Any], user_id: int | None = None) -> list[TokenItem]:
    """The tokens of ``user_id`` (everyone's when None), newest first, revoked ones included."""
    rows = conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE (%s::bigint IS NULL OR t.user_id = %s) ORDER BY t.id DESC",
        (user_id, user_id),
    ).fetchall()
    return [_item(r) for r in rows]


def revoke_token(
    conn: psycopg.Connection[Any], token_id: int, *, owner_id: int | None, by: str
) -> TokenItem:
    """Revoke a token (of ``owner_id`` only, unless None: an admin). Revoking a revoked token
    changes nothing. Its refresh families end with it. ``NotFound`` otherwise."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()),"
            " revoked_by = CASE WHEN revoked_at IS NULL THEN %s ELSE revoked_by END"
            " WHERE id = %s AND (%s::bigint IS NULL OR user_id = %s) RETURNING id",
            (by, token_id, owner_id, owner_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        conn.execute(
            "UPDATE api_refresh_tokens SET revoked_at = coalesce(revoked_at, now())"
            " WHERE api_token_id = %s",
            (token_id,),
        )
        item = get_token(conn, token_id)
    assert item is not None
    return item


def revoke_user_tokens(conn: psycopg.Connection[Any], user_id: int, *, by: str) -> int:
    """Revoke every live API token of ``user_id`` with their refresh tokens and families (the
    access JWTs of those families stop too); returns how many tokens were live."""
    with conn.transaction():
        revoked = conn.execute(
            "UPDATE api_tokens SET revoked_at = now(), revoked_by = %s"
            " WHERE user_id = %s AND revoked_at IS NULL",
            (by, user_id),
        ).rowcount
        revoke_user_families(conn, user_id)
    return int(revoked)


def revoke_user_families(conn: psycopg.Connection[Any], user_id: int) -> int:
    """End every refresh family of ``user_id``'s tokens (their refresh tokens and access JWTs
    stop; the API tokens themselves stay); returns how many families were live."""
    with conn.transaction():
        conn.execute(
            "UPDATE api_refresh_tokens SET revoked_at = coalesce(revoked_at, now())"
            " WHERE api_token_id IN (SELECT id FROM api_tokens WHERE user_id = %s)",
            (user_id,),
        )
        ended = conn.execute(
            "UPDATE api_token_families SET revoked_at = now() WHERE revoked_at IS NULL"
            " AND api_token_id IN (SELECT id FROM api_tokens WHERE user_id = %s)",
            (user_id,),
        ).rowcount
    return int(ended)


def _use_where(conn: psycopg.Connection[Any], where: str, args: tuple[Any, ...]) -> TokenUse | None:
    row = conn.execute(
        f"SELECT {TOKEN_COLUMNS}, u.role, u.state,"
        " coalesce((SELECT array_agg(ug.group_id) FROM user_groups ug"
        " WHERE ug.user_id = u.id), '{}'), u.must_change_password,"
        " u.sso_only AND NOT coalesce((SELECT enabled FROM sso_config), false)"
        f" FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE {where}",
        args,
    ).fetchone()
    if row is None:
        return None
    return TokenUse(_item(row), row[13], row[14], frozenset(int(g) for g in row[15]),
                    bool(row[16]), sso_off=bool(row[17]))  # fmt: skip


def token_use(conn: psycopg.Connection[Any], token_hash: bytes) -> TokenUse | None:
    """The token with this hash and its owner now (None when unknown); validity (expiry,
    revocation) is the caller's decision, so that it can say which."""
    return _use_where(conn, "t.token_hash = %s", (token_hash,))


def token_use_by_id(
    conn: psycopg.Connection[Any], token_id: int, family_id: str = ""
) -> TokenUse | None:
    """Like ``token_use`` for an access JWT's token id; ``family_revoked`` tells whether the
    JWT's refresh family has been revoked (reuse detected) since it was issued."""
    use = _use_where(conn, "t.id = %s", (token_id,))
    if use is None or not family_id:
        return use
    row = conn.execute(
        "SELECT revoked_at IS NOT NULL FROM api_token_families"
        " WHERE family_id = %s AND api_token_id = %s",
        (family_id, token_id),
    ).fetchone()
    revoked = row is None or bool(row[0])
    return dataclasses.replace(use, family_revoked=revoked)


def touch_token(conn: psycopg.Connection[Any], token_id: int, now: dt.datetime) -> None:
    """Record a use (at most once a minute per token: no write on every request)."""
    conn.execute(
        "UPDATE api_tokens SET last_used_at = %s WHERE id = %s"
        " AND (last_used_at IS NULL OR last_used_at < %s - interval '1 minute')",
        (now, token_id, now),
    )


# -- refresh tokens ---------------------------------------------------------------------------


def start_family(
    conn: psycopg.Connection[Any], api_token_id: int, token_hash: bytes, expires_at: dt.datetime
) -> str:
    """A new refresh family for an API token exchange, with its first refresh token."""
    family = str(uuid.uuid4())
    with conn.transaction():
        conn.execute(
            "INSERT INTO api_token_families (family_id, api_token_id) VALUES (%s, %s)",
            (family, api_token_id),
        )
        conn.execute(
            "INSERT INTO api_refresh_tokens (token_hash, api_token_id, family_id, expires_at)"
            " VALUES (%s, %s, %s, %s)",
            (token_hash, api_token_id, family, expires_at),
        )
    return family


class Refresh(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # no such refresh token
    EXPIRED = "expired"  # past its sliding expiry (or its family revoked)
    REUSED = "reused"  # already rotated: copied; the whole family is now revoked


@dataclass(frozen=True)
class Rotated:
    outcome: Refresh
    api_token_id: int = 0
    family_id: str = ""


def rotate_refresh(
    conn: psycopg.Connection[Any],
    token_hash: bytes,
    new_hash: bytes,
    now: dt.datetime,
    expires_at: dt.datetime,
) -> Rotated:
    """Use a refresh token: when live, mark it rotated and store its successor (same family,
    new sliding expiry). A rotated one presented again revokes its whole family."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id, api_token_id, family_id::text, expires_at, rotated_at, revoked_at"
            " FROM api_refresh_tokens WHERE token_hash = %s FOR UPDATE",
            (token_hash,),
        ).fetchone()
        if row is None:
            return Rotated(Refresh.UNKNOWN)
        rid, token_id, family, expires, rotated, revoked = row
        if rotated is not None:
            conn.execute(
                "UPDATE api_refresh_tokens SET revoked_at = coalesce(revoked_at, %s)"
                " WHERE family_id = %s",
                (now, family),
            )
            conn.execute(
                "UPDATE api_token_families SET revoked_at = coalesce(revoked_at, %s)"
                " WHERE family_id = %s",
                (now, family),
            )
            return Rotated(Refresh.REUSED, int(token_id), family)
        if revoked is not None or expires <= now:
            return Rotated(Refresh.EXPIRED, int(token_id), family)
        conn.execute("UPDATE api_refresh_tokens SET rotated_at = %s WHERE id = %s", (now, rid))
        conn.execute(
            "INSERT INTO api_refresh_tokens (token_hash, api_token_id, family_id, expires_at)"
            " VALUES (%s, %s, %s, %s)",
            (new_hash, token_id, family, expires_at),
        )
    return Rotated(Refresh.OK, int(token_id), family)


# -- JWT signing keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    kid: str
    public_pem: str
    private_sealed: str
    created_at: dt.datetime
    sign_until: dt.datetime
    retire_at: dt.datetime


def signing_keys(conn: psycopg.Connection[Any], now: dt.datetime) -> list[SigningKey]:
    """The keys not yet retired at ``now``, newest first."""
    rows = conn.execute(
        "SELECT kid, public_pem, private_sealed, created_at, sign_until, retire_at"
        " FROM jwt_signing_keys WHERE retire_at > %s ORDER BY created_at DESC, kid",
        (now,),
    ).fetchall()
    return [SigningKey(*r) for r in rows]


def add_signing_key(conn: psycopg.Connection[Any], key: SigningKey) -> None:
    conn.execute(
        "INSERT INTO jwt_signing_keys (kid, public_pem, private_sealed, created_at, sign_until,"
        " retire_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (key.kid, key.public_pem, key.private_sealed, key.created_at, key.sign_until,
         key.retire_at),
    )  # fmt: skip


def delete_retired_keys(conn: psycopg.Connection[Any], now: dt.datetime) -> int:
    """Forget keys retired before ``now`` (nothing they signed verifies any more)."""
    return conn.execute("DELETE FROM jwt_signing_keys WHERE retire_at <= %s", (now,)).rowcount
