"""An emptied audit log does not verify when a checkpoint says entries were there (review F13a
H2): only a log that never had an entry verifies with none. The count of matching entries is
capped (L1)."""

from __future__ import annotations

import datetime as dt

from storage import Database
from storage.audit import AuditFilter, list_entries, prune_audit

from .test_audit import KEY, T0, _fill, _sql, _verify


async def test_a_log_emptied_after_a_prune_does_not_verify(db: Database) -> None:
    await _fill(db, 10)
    await db.run(lambda c: prune_audit(c, KEY, T0 + dt.timedelta(hours=5)))
    assert (await _verify(db)).ok
    await _sql(db, "DELETE FROM audit_entries", "DELETE FROM audit_head")
    result = await _verify(db)
    assert not result.ok
    assert result.problem == "the chain head is missing"


async def test_the_count_of_matches_stops_past_the_cap(db: Database) -> None:
    await _fill(db, 10)
    page, total = await db.run(list_entries, AuditFilter(limit=3, count_cap=5))
    assert (len(page), total) == (3, 6)  # 6 = "more than 5"
    _, exact = await db.run(list_entries, AuditFilter(limit=3, count_cap=50))
    assert exact == 10
