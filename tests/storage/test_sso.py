"""SSO records in PostgreSQL: sign-ins that create or update users, the last-admin and disabled
guards, logins in progress used once, explicit links."""

from __future__ import annotations

import datetime as dt

import pytest

from storage import Conflict, Database, LastAdmin, create_group, create_user, update_user
from storage.sso import (
    NO_PASSWORD,
    PendingLogin,
    SsoLogin,
    identities_of,
    link_identity,
    sso_login,
    start_login,
    take_login,
)

ISSUER = "https://idp.example.com"


async def login(
    db: Database, subject: str, role: str, groups: tuple[int, ...] = (), hint: str = ""
) -> SsoLogin:
    return await db.run(
        lambda c: sso_login(
            c, ISSUER, subject, role=role, group_ids=groups, name_hint=hint or subject, email=""
        )
    )


async def test_first_sign_in_creates_a_passwordless_user_and_later_ones_update_it(
    db: Database,
) -> None:
    web = await db.run(create_group, "web")
    first = await login(db, "s-1", "operator", (web.id,), "Dana@Example.com")
    assert first.created and first.user.username == "dana.example.com"
    assert (first.user.role, first.user.group_ids) == ("operator", (web.id,))
    assert first.user.password_hash == NO_PASSWORD
    again = await login(db, "s-1", "auditor")
    assert not again.created and again.role_before == "operator"
    assert (again.user.id, again.user.role, again.user.group_ids) == (first.user.id, "auditor", ())


async def test_a_taken_name_gets_a_suffix_instead_of_the_existing_account(db: Database) -> None:
    local = await db.run(lambda c: create_user(c, "erin", "hash", "admin"))
    created = await login(db, "s-erin", "operator", hint="erin")
    assert created.user.username == "erin-2" and created.user.id != local.id
    assert await db.run(identities_of, local.id) == []


async def test_sign_in_never_demotes_the_last_active_admin(db: Database) -> None:
    admin = await db.run(lambda c: create_user(c, "root", "hash", "admin"))
    await db.run(lambda c: link_identity(c, admin.id, ISSUER, "s-root", by="test"))
    with pytest.raises(LastAdmin):
        await login(db, "s-root", "operator")
    other = await db.run(lambda c: create_user(c, "second", "hash", "admin"))
    assert other.role == "admin"
    demoted = await login(db, "s-root", "operator")
    assert demoted.user.role == "operator"


async def test_a_disabled_account_is_not_signed_in(db: Database) -> None:
    await db.run(lambda c: create_user(c, "keeper", "hash", "admin"))
    user = (await login(db, "s-off", "operator")).user
    await db.run(lambda c: update_user(c, user.id, by="test", state="disabled"))
    with pytest.raises(Conflict, match="disabled"):
        await login(db, "s-off", "operator")


async def test_an_identity_links_to_one_account_only(db: Database) -> None:
    a = await db.run(lambda c: create_user(c, "a-user", "hash", "auditor"))
    b = await db.run(lambda c: create_user(c, "b-user", "hash", "auditor"))
    await db.run(lambda c: link_identity(c, a.id, ISSUER, "shared", by="test"))
    with pytest.raises(Conflict, match="already linked to a-user"):
        await db.run(lambda c: link_identity(c, b.id, ISSUER, "shared", by="test"))


async def test_a_login_in_progress_is_taken_once_and_not_after_it_expired(db: Database) -> None:
    pending = PendingLogin("state", "nonce", "verifier", "https://pm/sso/callback", "/hosts")
    await db.run(start_login, b"browser-1", pending, dt.timedelta(minutes=10))
    assert await db.run(take_login, b"browser-1") == pending
    assert await db.run(take_login, b"browser-1") is None
    await db.run(start_login, b"browser-2", pending, dt.timedelta(seconds=-1))
    assert await db.run(take_login, b"browser-2") is None
