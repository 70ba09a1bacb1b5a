"""patch_manager.serve.reset_password (review F13b #11): a user that does not exist is refused
(a typo never creates an admin); only the bootstrap 'admin' is created, and only while no user
exists; a reset is audited as the actor given."""

from __future__ import annotations

import pytest

from patch_manager.serve import UnknownUser, reset_password
from storage import Database, count_users, get_user
from storage.audit import AuditFilter, list_entries
from web import Auth


async def test_resetting_an_unknown_user_is_refused_and_creates_nobody(db: Database) -> None:
    auth = Auth(db)
    await reset_password(db, auth)  # no user yet: the bootstrap admin is created
    with pytest.raises(UnknownUser, match="no user named 'bbo'"):
        await reset_password(db, auth, "bbo", must_change=True, actor="cli:alice@box")
    assert await db.run(get_user, "bbo") is None
    assert await db.run(count_users) == 1


async def test_with_no_user_only_the_bootstrap_admin_is_created(db: Database) -> None:
    with pytest.raises(UnknownUser):
        await reset_password(db, Auth(db), "bob")
    assert await db.run(count_users) == 0


async def test_a_reset_is_audited_as_the_actor_given(db: Database) -> None:
    auth = Auth(db)
    await reset_password(db, auth)
    await reset_password(db, auth, "admin", must_change=True, actor="cli:alice@box")
    entries, _ = await db.run(list_entries, AuditFilter(action="user."))
    assert [(e.actor, e.action, e.target) for e in reversed(entries)] == [
        ("system", "user.create", "user:admin"),
        ("cli:alice@box", "user.password.reset", "user:admin"),
    ]
