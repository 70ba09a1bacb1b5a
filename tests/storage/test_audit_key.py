"""The audit chain is bound to its key (review F13a H1): another key neither extends the chain
nor makes verification call every entry edited."""

from __future__ import annotations

import pytest

from storage import Database
from storage.audit import AuditWrongKey, count_entries, record, verify
from tests.conftest import AUDIT_TEST_KEY

from .test_audit import _e

OTHER_KEY = bytes(range(1, 33))


async def test_another_key_cannot_extend_the_chain_and_writes_nothing(
    db: Database, db_conninfo: str
) -> None:
    await record(db, _e(1))
    other = Database(db_conninfo, size=1, audit_key=OTHER_KEY)
    await other.open()
    try:
        with pytest.raises(AuditWrongKey, match="wrong audit key"):
            await record(other, _e(2))
    finally:
        await other.close()
    assert await db.run(count_entries) == 1
    assert (await db.run(lambda c: verify(c, AUDIT_TEST_KEY))).ok


async def test_verifying_with_another_key_reports_the_wrong_key_not_an_edit(db: Database) -> None:
    await record(db, _e(1))
    result = await db.run(lambda c: verify(c, OTHER_KEY))
    assert not result.ok
    assert result.problem.startswith("wrong key")
