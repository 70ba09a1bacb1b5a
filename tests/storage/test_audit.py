"""The audit chain (storage.audit): appends in the action's transaction, verification that names
the first broken link, checkpointed pruning."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio

from storage import AuditBroken, AuditEntry, AuditKeyMissing, Database, run_audited
from storage.audit import (
    AuditFilter,
    AuditWriteFailed,
    append,
    count_entries,
    list_entries,
    prune_audit,
    record,
    verify,
)
from tests.conftest import AUDIT_TEST_KEY

KEY = AUDIT_TEST_KEY
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _e(n: int, actor: str = "user:alice") -> AuditEntry:
    return AuditEntry(actor=actor, action="test.act", target=f"thing:{n}", after={"n": n})


async def _fill(db: Database, count: int, *, start: dt.datetime = T0, step_h: float = 1) -> None:
    def write(conn: Any) -> None:
        for i in range(count):
            append(conn, KEY, _e(i), at=start + dt.timedelta(hours=i * step_h))

    await db.run(write)


async def _verify(db: Database, **kw: Any) -> Any:
    return await db.run(lambda conn: verify(conn, KEY, **kw))


async def _sql(db: Database, *statements: str) -> None:
    def run(conn: Any) -> None:
        with conn.transaction():
            for s in statements:
                conn.execute(s)

    await db.run(run)


async def test_an_intact_chain_verifies_and_counts_every_entry(db: Database) -> None:
    await _fill(db, 10)
    result = await _verify(db)
    assert (result.ok, result.checked, result.first_id, result.last_id) == (True, 10, 1, 10)


async def test_an_empty_log_verifies(db: Database) -> None:
    assert (await _verify(db)).ok


async def test_entry_fields_round_trip_including_json_and_nul_characters(db: Database) -> None:
    entry = AuditEntry(
        actor="user:bob",
        action="host.remove",
        target="host:3",
        source="127.0.0.1",
        request_id="r1",
        before={"name": "web\x00-1", "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        after=None,
        detail="a\x00b",
    )
    stored = await record(db, entry)
    assert stored.id == 1
    (page, total) = await db.run(list_entries, AuditFilter())
    assert total == 1
    assert page[0].before == {"name": "web\ufffd-1", "when": "2026-01-01 00:00:00+00:00"}
    assert page[0].detail == "a\ufffdb"
    assert (await _verify(db)).ok


async def test_a_row_updated_through_sql_is_named(db: Database) -> None:
    await _fill(db, 8)
    await _sql(db, "UPDATE audit_entries SET actor = 'user:mallory' WHERE id = 5")
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 5)
    assert "entry 5 does not match its MAC" in result.problem


async def test_a_row_deleted_through_sql_is_named(db: Database) -> None:
    await _fill(db, 8)
    await _sql(db, "DELETE FROM audit_entries WHERE id = 4")
    result = await _verify(db)
    assert (result.ok, result.broken_id, result.problem) == (
        False,
        4,
        "entry 4 is missing (deleted)",
    )


async def test_the_newest_rows_deleted_through_sql_are_named(db: Database) -> None:
    await _fill(db, 8)
    await _sql(db, "DELETE FROM audit_entries WHERE id >= 7")
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 7)
    assert "entries 7 to 8 are missing" in result.problem


async def test_a_row_inserted_through_sql_is_named(db: Database) -> None:
    await _fill(db, 8)
    # Renumber to make room in the middle, then insert a forged entry there.
    await _sql(
        db,
        "UPDATE audit_entries SET id = id + 100 WHERE id > 3",
        "UPDATE audit_entries SET id = id - 99 WHERE id > 100",
        "INSERT INTO audit_entries (id, at, actor, action, outcome, mac)"
        " VALUES (4, now(), 'user:mallory', 'test.act', 'ok', 'ff')",
    )
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 4)


async def test_a_row_appended_through_sql_after_the_head_is_named(db: Database) -> None:
    await _fill(db, 3)
    await _sql(
        db,
        "INSERT INTO audit_entries (id, at, actor, action, outcome, mac)"
        " VALUES (4, now(), 'user:mallory', 'test.act', 'ok', 'ff')",
    )
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 4)


async def test_two_rows_swapped_through_sql_are_named(db: Database) -> None:
    await _fill(db, 8)
    await _sql(
        db,
        "UPDATE audit_entries SET id = -1 WHERE id = 3",
        "UPDATE audit_entries SET id = 3 WHERE id = 6",
        "UPDATE audit_entries SET id = 6 WHERE id = -1",
    )
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 3)


async def test_swapping_contents_but_keeping_ids_is_named(db: Database) -> None:
    await _fill(db, 8)
    await _sql(
        db,
        "UPDATE audit_entries a SET target = b.target, after = b.after, mac = b.mac"
        " FROM audit_entries b WHERE (a.id, b.id) IN ((2, 5), (5, 2))",
    )
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 2)


async def test_a_different_key_fails_verification_naming_the_wrong_key(db: Database) -> None:
    await _fill(db, 3)
    result = await db.run(lambda conn: verify(conn, b"\x01" * 32))
    assert (result.ok, result.broken_id) == (False, None)
    assert result.problem.startswith("wrong key")


async def test_verify_since_starts_at_the_first_entry_of_that_time(db: Database) -> None:
    await _fill(db, 10)
    await _sql(db, "UPDATE audit_entries SET actor = 'user:mallory' WHERE id = 2")
    result = await _verify(db, since=T0 + dt.timedelta(hours=5))
    assert (result.ok, result.first_id, result.checked) == (True, 6, 5)
    assert not (await _verify(db)).ok


async def test_a_failing_audit_insert_fails_the_action_and_changes_nothing(db: Database) -> None:
    await _sql(
        db,
        "CREATE TABLE things (n int)",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries"
        " FOR EACH ROW EXECUTE FUNCTION refuse()",
    )

    def action(conn: Any) -> None:
        conn.execute("INSERT INTO things VALUES (1)")

    with pytest.raises(AuditWriteFailed, match="audit refused"):
        await run_audited(db, _e(1), action)
    things = await db.run(lambda conn: conn.execute("SELECT count(*) FROM things").fetchone())
    assert things == (0,)
    assert await db.run(count_entries) == 0


async def test_a_database_without_the_key_refuses_to_write_anything(db_conninfo: str) -> None:
    keyless = Database(db_conninfo, size=1)
    await keyless.open()
    try:
        with pytest.raises(AuditKeyMissing):
            await run_audited(keyless, _e(1), lambda conn: conn.execute("SELECT 1"))
        with pytest.raises(AuditKeyMissing):
            await record(keyless, _e(1))
    finally:
        await keyless.close()


async def test_the_entry_can_be_made_from_the_actions_result(db: Database) -> None:
    stored = await run_audited(db, lambda n: _e(0).but(target=f"thing:{n}"), lambda conn: 41 + 1)
    assert stored == 42
    (page, _) = await db.run(list_entries, AuditFilter())
    assert page[0].target == "thing:42"


async def test_fifty_parallel_writers_never_fork_the_chain(db_conninfo: str) -> None:
    wide = Database(db_conninfo, size=10, audit_key=KEY)
    await wide.open()
    try:
        await wide.run(lambda conn: conn.execute("CREATE TABLE things (n int, who text)"))

        async def act(n: int, who: str) -> None:
            await run_audited(
                wide,
                _e(n, who),
                lambda conn: conn.execute("INSERT INTO things VALUES (%s, %s)", (n, who)),
            )

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(act, n, f"user:u{n % 5}")
            for n in range(50, 60):
                nursery.start_soon(act, n, "system")
        result = await wide.run(lambda conn: verify(conn, KEY))
        assert (result.ok, result.checked) == (True, 60)
        (page, total) = await wide.run(list_entries, AuditFilter(limit=100))
        assert total == 60
        assert sorted(e.target for e in page) == sorted(f"thing:{n}" for n in range(60))
        assert [e.id for e in page] == list(range(60, 0, -1))
        per_user = await wide.run(list_entries, AuditFilter(actor="user:u3"))
        assert per_user[1] == 10
    finally:
        await wide.close()


async def test_pruning_writes_a_checkpoint_and_the_rest_still_verifies(db: Database) -> None:
    # 90 days of entries, one every 6 hours; keep the last 30 days.
    await _fill(db, 360, step_h=6)
    cutoff = T0 + dt.timedelta(days=60)
    deleted = await db.run(lambda conn: prune_audit(conn, KEY, cutoff, batch=50))
    assert deleted == 240
    assert await db.run(count_entries) == 120
    result = await _verify(db)
    assert (result.ok, result.first_id, result.last_id, result.checkpoint) == (True, 241, 360, 1)
    # New entries chain on; a second prune chains its checkpoint onto the first.
    await record(db, _e(999))
    deleted = await db.run(lambda conn: prune_audit(conn, KEY, cutoff + dt.timedelta(days=15)))
    assert deleted == 60
    result = await _verify(db)
    assert (result.ok, result.first_id, result.checkpoint) == (True, 301, 2)


async def test_after_pruning_deleting_the_first_remaining_row_is_named(db: Database) -> None:
    await _fill(db, 20)
    await db.run(lambda conn: prune_audit(conn, KEY, T0 + dt.timedelta(hours=10)))
    await _sql(db, "DELETE FROM audit_entries WHERE id = 11")
    result = await _verify(db)
    assert (result.ok, result.broken_id) == (False, 11)


async def test_an_edited_checkpoint_is_named(db: Database) -> None:
    await _fill(db, 20)
    await db.run(lambda conn: prune_audit(conn, KEY, T0 + dt.timedelta(hours=10)))
    await _sql(db, "UPDATE audit_checkpoints SET last_id = 12")
    result = await _verify(db)
    assert not result.ok
    assert result.problem == "checkpoint 1 was edited"


async def test_pruning_refuses_a_broken_chain_and_deletes_nothing(db: Database) -> None:
    await _fill(db, 20)
    await _sql(db, "UPDATE audit_entries SET actor = 'x' WHERE id = 3")
    with pytest.raises(AuditBroken, match="entry 3"):
        await db.run(lambda conn: prune_audit(conn, KEY, T0 + dt.timedelta(hours=10)))
    assert await db.run(count_entries) == 20


async def test_an_interrupted_prune_is_finished_by_the_next_one(db: Database) -> None:
    await _fill(db, 20)
    await db.run(lambda conn: prune_audit(conn, KEY, T0 + dt.timedelta(hours=10)))
    # Put back the situation of a crash after the checkpoint: rows at or below the cut remain.
    await _sql(
        db,
        "INSERT INTO audit_entries (id, at, actor, action, outcome, mac)"
        " VALUES (5, now(), 'user:x', 'test.act', 'ok', 'ff')",
    )
    assert (await _verify(db)).ok  # rows covered by the checkpoint are not part of the chain
    assert await db.run(lambda conn: prune_audit(conn, KEY, T0)) == 1


async def test_filters_select_by_actor_action_target_outcome_and_time(db: Database) -> None:
    def write(conn: Any) -> None:
        append(conn, KEY, AuditEntry("user:a", "host.remove", "host:1"), at=T0)
        append(conn, KEY, AuditEntry("user:b", "host.add", "host:2"), at=T0 + dt.timedelta(1))
        append(conn, KEY, AuditEntry("system", "job.create", "job:1", outcome="failed"), at=T0)
        append(conn, KEY, AuditEntry("token:3:ci", "job.cancel", "job:1", outcome="denied"))

    await db.run(write)

    async def ids(**kw: Any) -> list[int]:
        page, _ = await db.run(list_entries, AuditFilter(**kw))
        return [e.id for e in page]

    assert await ids(actor="user:") == [2, 1]
    assert await ids(actor="user:a") == [1]
    assert await ids(action="job.*") == [4, 3]
    assert await ids(target="job:1") == [4, 3]
    assert await ids(outcome="denied") == [4]
    assert await ids(since=T0 + dt.timedelta(hours=1), until=T0 + dt.timedelta(days=2)) == [2]
    assert await ids(limit=2) == [4, 3]
    assert await ids(limit=2, before_id=3) == [2, 1]
    assert await ids(actor="user_") == []  # LIKE wildcards are literal
