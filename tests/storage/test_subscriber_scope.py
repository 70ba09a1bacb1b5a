"""A notification subscriber's host scope is exactly what the web gives the same user
(web.authz.scope_of), for every role and both settings of operators_see_ungrouped (review F13b
#4: auditors were told about ungrouped hosts the web never shows them)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from storage import Database
from storage.notifications import save_subscription, subscribers
from storage.principals import load_principal, set_user_groups
from storage.users import create_user
from web.authz import Principal, scope_of


def _users(conn: psycopg.Connection[Any]) -> None:
    group = conn.execute("INSERT INTO groups (name) VALUES ('web') RETURNING id").fetchone()
    assert group is not None
    for role in ("admin", "operator", "auditor"):
        user = create_user(conn, role, "x", role)
        set_user_groups(conn, user.id, [group[0]])
        save_subscription(conn, user.id, f"{role}@example.test", ["host_unreachable"])


@pytest.mark.parametrize("see_ungrouped", [False, True])
async def test_each_subscribers_scope_is_the_webs_scope_of_the_same_user(
    db: Database, see_ungrouped: bool
) -> None:
    await db.run(_users)
    found = await db.run(lambda c: subscribers(c, see_ungrouped=see_ungrouped))
    assert {s.username for s in found} == {"admin", "operator", "auditor"}
    for s in found:
        row = await db.run(load_principal, s.user_id)
        web = scope_of(Principal.of(row, operators_see_ungrouped=see_ungrouped))
        assert s.scope == web, s.username
