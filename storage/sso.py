"""Single sign-on records: the provider configuration, claim → role mappings, SSO identities
linked to users and the logins in progress.

An SSO identity is (issuer, subject). It belongs to exactly one user: created with the user at
the first SSO login of an identity whose claims map to a role (``sso_login``), or linked to an
existing account by an admin (``link_identity``). Nothing links by e-mail address.

Errors: ``NotFound`` (user, identity), ``Conflict`` (identity already linked), ``LastAdmin``
(an SSO login whose claims would demote the last active admin).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import Conflict, NotFound
from .tokens import revoke_user_tokens
from .users import LastAdmin, User, _end_sessions, _other_active_admins, _write_groups

NO_PASSWORD = "!sso"  # not an Argon2 hash: no password verifies against it


@dataclass(frozen=True)
class SsoConfig:
    enabled: bool = False
    preset: str = "oidc"  # "oidc" (any issuer by discovery URL) or "entra" (tenant id)
    display_name: str = ""
    discovery_url: str = ""
    tenant_id: str = ""
    client_id: str = ""
    client_secret_sealed: str = ""
    groups_claim: str = "groups"
    updated_at: dt.datetime | None = None
    updated_by: str = ""


@dataclass(frozen=True)
class SsoMapping:
    claim_value: str
    role: str
    group_ids: tuple[int, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SsoIdentity:
    id: int
    issuer: str
    subject: str
    user_id: int
    username: str
    email: str
    linked_at: dt.datetime
    linked_by: str
    last_login_at: dt.datetime | None


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    next_path: str


_CONFIG_FIELDS = (
    "enabled",
    "preset",
    "display_name",
    "discovery_url",
    "tenant_id",
    "client_id",
    "client_secret_sealed",
    "groups_claim",
)


def load_sso_config(conn: psycopg.Connection[Any]) -> SsoConfig:
    row = conn.execute(
        "SELECT " + ", ".join(_CONFIG_FIELDS) + ", updated_at, updated_by FROM sso_config"
    ).fetchone()
    if row is None:
        return SsoConfig()
    return SsoConfig(
        bool(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]
    )


def save_sso_config(conn: psycopg.Connection[Any], config: SsoConfig, *, by: str) -> None:
    """Insert or replace the one configuration row."""
    values = [getattr(config, f) for f in _CONFIG_FIELDS]
    conn.execute(
        "INSERT INTO sso_config (id, " + ", ".join(_CONFIG_FIELDS) + ", updated_at, updated_by)"
        " VALUES (1, " + ", ".join(["%s"] * len(_CONFIG_FIELDS)) + ", now(), %s)"
        " ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{f} = EXCLUDED.{f}" for f in _CONFIG_FIELDS)
        + ", updated_at = now(), updated_by = EXCLUDED.updated_by",
        (*values, by),
    )


def list_mappings(conn: psycopg.Connection[Any]) -> list[SsoMapping]:
    rows = conn.execute(
        "SELECT m.claim_value, m.role,"
        " coalesce(array_agg(g.id ORDER BY g.name) FILTER (WHERE g.id IS NOT NULL), '{}'),"
        " coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.id IS NOT NULL), '{}')"
        " FROM sso_mappings m LEFT JOIN sso_mapping_groups mg ON mg.claim_value = m.claim_value"
        " LEFT JOIN groups g ON g.id = mg.group_id GROUP BY m.claim_value ORDER BY m.claim_value"
    ).fetchall()
    return [SsoMapping(r[0], r[1], tuple(int(x) for x in r[2]), tuple(r[3])) for r in rows]


def save_mapping(
    conn: psycopg.Connection[Any],
    claim_value: str,
    role: str,
    group_ids: tuple[int, ...],
    *,
    by: str,
) -> None:
    """Add or replace the mapping of ``claim_value`` (``NotFound`` for an unknown group)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO sso_mappings (claim_value, role, created_by) VALUES (%s, %s, %s)"
            " ON CONFLICT (claim_value) DO UPDATE SET role = EXCLUDED.role",
            (claim_value, role, by),
        )
        conn.execute("DELETE FROM sso_mapping_groups WHERE claim_value = %s", (claim_value,))
        if group_ids:
            wanted = sorted(set(group_ids))
            found = conn.execute("SELECT id FROM groups WHERE id = ANY(%s)", (wanted,)).fetchall()
            missing = set(wanted) - {int(r[0]) for r in found}
            if missing:
                raise NotFound(f"no group with id {min(missing)}")
            conn.execute(
                "INSERT INTO sso_mapping_groups (claim_value, group_id)"
                " SELECT %s, unnest(%s::bigint[])",
                (claim_value, wanted),
            )


def delete_mapping(conn: psycopg.Connection[Any], claim_value: str) -> bool:
    row = conn.execute(
        "DELETE FROM sso_mappings WHERE claim_value = %s RETURNING 1", (claim_value,)
    ).fetchone()
    return row is not None


# -- logins in progress --------------------------------------------------------------------------


def start_login(
    conn: psycopg.Connection[Any], browser_hash: bytes, pending: PendingLogin, ttl: dt.timedelta
) -> None:
    """Remember a login in progress (expired ones are pruned on the way)."""
    with conn.transaction():
        conn.execute("DELETE FROM sso_logins WHERE expires_at < now()")
        conn.execute(
            "INSERT INTO sso_logins (browser_hash, state, nonce, code_verifier, redirect_uri,"
            " next_path, expires_at) VALUES (%s, %s, %s, %s, %s, %s, now() + %s)"
            " ON CONFLICT (browser_hash) DO NOTHING",
            (
                browser_hash,
                pending.state,
                pending.nonce,
                pending.code_verifier,
                pending.redirect_uri,
                pending.next_path,
                ttl,
            ),
        )


def take_login(conn: psycopg.Connection[Any], browser_hash: bytes) -> PendingLogin | None:
    """The unexpired login in progress of this browser, consumed (usable once)."""
    row = conn.execute(
        "DELETE FROM sso_logins WHERE browser_hash = %s RETURNING state, nonce, code_verifier,"
        " redirect_uri, next_path, expires_at > now()",
        (browser_hash,),
    ).fetchone()
    if row is None or not row[5]:
        return None
    return PendingLogin(row[0], row[1], row[2], row[3], row[4])


# -- identities ----------------------------------------------------------------------------------

_IDENTITY = (
    "SELECT i.id, i.issuer, i.subject, i.user_id, u.username, i.email, i.linked_at,"
    " i.linked_by, i.last_login_at FROM sso_identities i JOIN users u ON u.id = i.user_id"
)


def _identity(row: Any) -> SsoIdentity:
    return SsoIdentity(
        int(row[0]), row[1], row[2], int(row[3]), row[4], row[5], row[6], row[7], row[8]
    )


def identities_of(conn: psycopg.Connection[Any], user_id: int | None = None) -> list[SsoIdentity]:
    rows = conn.execute(
        _IDENTITY + " WHERE %s::bigint IS NULL OR i.user_id = %s ORDER BY u.username, i.id",
        (user_id, user_id),
    ).fetchall()
    return [_identity(r) for r in rows]


def link_identity(
    conn: psycopg.Connection[Any], user_id: int, issuer: str, subject: str, *, by: str
) -> SsoIdentity:
    """An admin links (issuer, subject) to a user (``Conflict`` when the identity is linked
    already, to whomever; ``NotFound`` for an unknown user)."""
    try:
        with conn.transaction():
            if conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is None:
                raise NotFound(f"no user with id {user_id}")
            row = conn.execute(
                "INSERT INTO sso_identities (issuer, subject, user_id, linked_by)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (issuer, subject, user_id, by),
            ).fetchone()
            assert row is not None
    except psycopg.errors.UniqueViolation:
        owner = conn.execute(
            "SELECT u.username FROM sso_identities i JOIN users u ON u.id = i.user_id"
            " WHERE i.issuer = %s AND i.subject = %s",
            (issuer, subject),
        ).fetchone()
        name = owner[0] if owner else "another user"
        raise Conflict(f"this SSO identity is already linked to {name}; unlink it first") from None
    found = conn.execute(_IDENTITY + " WHERE i.id = %s", (int(row[0]),)).fetchone()
    return _identity(found)


def unlink_identity(conn: psycopg.Connection[Any], user_id: int, identity_id: int) -> SsoIdentity:
    row = conn.execute(_IDENTITY + " WHERE i.id = %s AND i.user_id = %s", (identity_id, user_id))
    found = row.fetchone()
    if found is None:
        raise NotFound(f"user {user_id} has no SSO identity {identity_id}")
    conn.execute("DELETE FROM sso_identities WHERE id = %s", (identity_id,))
    return _identity(found)


@dataclass(frozen=True)
class Unmapped:
    """What an unmapped sign-in ended for an SSO-only user."""

    user_id: int
    username: str
    sessions_ended: int
    tokens_revoked: int


def unmap_sso_user(conn: psycopg.Connection[Any], issuer: str, subject: str) -> Unmapped | None:
    """The identity signed in without any mapped claim: when its user exists only through
    single sign-on, the provider no longer grants a role, so that user's sessions end and their
    API tokens (with their refresh families) are revoked. None when there is no such user."""
    with conn.transaction():
        row = conn.execute(
            "SELECT u.id, u.username FROM sso_identities i JOIN users u ON u.id = i.user_id"
            " WHERE i.issuer = %s AND i.subject = %s AND u.sso_only FOR UPDATE OF u",
            (issuer, subject),
        ).fetchone()
        if row is None:
            return None
        user_id = int(row[0])
        sessions = _end_sessions(conn, user_id)
        tokens = revoke_user_tokens(conn, user_id, by="sso")
    return Unmapped(user_id, row[1], sessions, tokens)


_NAME_BAD = re.compile(r"[^a-z0-9._-]+")


def username_for(hint: str) -> str:
    """A user name the schema accepts, made from a claim (preferred_username, e-mail, ...)."""
    name = _NAME_BAD.sub("-", hint.strip().lower().replace("@", "."))
    name = name.strip("-._")[:56] or "sso-user"
    return name


@dataclass(frozen=True)
class SsoLogin:
    """The outcome of an SSO login in the database: the user to start a session for."""

    user: User
    created: bool
    role_before: str  # "" for a new user


def sso_login(
    conn: psycopg.Connection[Any],
    issuer: str,
    subject: str,
    *,
    role: str,
    group_ids: tuple[int, ...],
    name_hint: str,
    email: str,
) -> SsoLogin:
    """Apply a successful SSO login: the identity's user (created, without a password, on the
    identity's first login) gets ``role`` and ``group_ids`` as the claims map them now.
    Raises ``LastAdmin`` when that would demote the last active admin, ``Conflict`` for a
    disabled user (its state is the admin's decision, not the provider's)."""
    find = "SELECT user_id FROM sso_identities WHERE issuer = %s AND subject = %s FOR UPDATE"
    with conn.transaction():
        row = conn.execute(find, (issuer, subject)).fetchone()
        if row is None:  # a first sign-in: one at a time (the same identity, or the same name)
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pm:sso-first-sign-in'))")
            row = conn.execute(find, (issuer, subject)).fetchone()  # made while we waited?
        if row is None:
            base = username_for(name_hint)
            name = base
            suffix = 1
            while conn.execute(
                "SELECT 1 FROM users WHERE username = %s", (name,)
            ).fetchone():  # never taken over: a local account of that name is someone else
                suffix += 1
                name = f"{base}-{suffix}"
            created = conn.execute(
                "INSERT INTO users (username, password_hash, role, sso_only, created_by,"
                " updated_by) VALUES (%s, %s, %s, true, 'sso', 'sso') RETURNING id",
                (name, NO_PASSWORD, role),
            ).fetchone()
            assert created is not None
            user_id = int(created[0])
            _write_groups(conn, user_id, group_ids)
            conn.execute(
                "INSERT INTO sso_identities (issuer, subject, user_id, email, linked_by,"
                " last_login_at) VALUES (%s, %s, %s, %s, 'sso', now())",
                (issuer, subject, user_id, email),
            )
            user = User(user_id, name, NO_PASSWORD, role, "active", False, tuple(sorted(group_ids)))
            return SsoLogin(user, True, "")
        user_id = int(row[0])
        conn.execute("SELECT id FROM users WHERE role = 'admin' AND state = 'active' FOR UPDATE")
        current = conn.execute(
            "SELECT role, state, coalesce((SELECT array_agg(group_id ORDER BY group_id)"
            " FROM user_groups WHERE user_id = u.id), '{}') FROM users u WHERE id = %s FOR UPDATE",
            (user_id,),
        ).fetchone()
        assert current is not None  # ON DELETE CASCADE: an identity has its user
        old_role, state, old_groups = current[0], current[1], [int(g) for g in current[2]]
        if state != "active":
            raise Conflict("this account is disabled")
        if old_role == "admin" and role != "admin" and _other_active_admins(conn, user_id) == 0:
            raise LastAdmin("the last active admin cannot be demoted by an SSO login")
        if old_role != role or old_groups != sorted(set(group_ids)):
            _write_groups(conn, user_id, group_ids)
            conn.execute(
                "UPDATE users SET role = %s, updated_by = 'sso', updated_at = now() WHERE id = %s",
                (role, user_id),
            )
            _end_sessions(conn, user_id)  # the old rights end with the old sessions
        conn.execute(
            "UPDATE sso_identities SET last_login_at = now(),"
            " email = CASE WHEN %s = '' THEN email ELSE %s END"
            " WHERE issuer = %s AND subject = %s",
            (email, email, issuer, subject),
        )
        found = conn.execute(
            "SELECT u.id, u.username, u.password_hash, u.role, u.state, u.must_change_password,"
            " coalesce((SELECT array_agg(ug.group_id ORDER BY ug.group_id) FROM user_groups ug"
            " WHERE ug.user_id = u.id), '{}') FROM users u WHERE u.id = %s",
            (user_id,),
        ).fetchone()
        assert found is not None
        user = User(
            int(found[0]), found[1], found[2], found[3], found[4], bool(found[5]), tuple(found[6])
        )
        return SsoLogin(user, False, old_role)
