"""The audit log (R-9.1): one tamper-evident chain of who did what.

Every entry is appended by ``append(conn, key, entry)`` INSIDE the caller's transaction, as the
last statement of it: writers are serialised by a transaction-scoped advisory lock, the entry
gets the next id (gapless: previous id + 1) and the MAC

    mac = HMAC-SHA256(key, previous mac || canonical JSON of the entry, its id and time)

(hex; the first entry's previous MAC is ""). A signed head row names the last entry, so
deleting the newest entries is detected too. The key lives outside the database
(``ca.audit_key``); ``Database(audit_key=...)`` carries it to writers and ``run_audited`` is the
one way to run an action and its entry in one transaction: a failed append fails the action.

``verify(conn, key)`` walks the chain and names the first broken link (an edited, deleted,
inserted or reordered entry). ``prune_audit`` first writes a signed checkpoint (the last pruned
entry's id and MAC and the count at the cut), then deletes in bounded batches, so that the
remaining chain still verifies from the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from .errors import StorageError

if TYPE_CHECKING:
    from .database import Database

T = TypeVar("T")

OUTCOMES = ("ok", "failed", "denied")
KEY_BYTES = 32
_LOCK_ID = 0x617564697400  # pg_advisory_xact_lock key of the audit chain ("audit\0")
_PAGE = 2000


class AuditKeyMissing(RuntimeError):
    """An audited write on a ``Database`` built without the audit key: nothing is written."""


class AuditWriteFailed(StorageError):
    """The entry could not be written: the action it records is rolled back with it."""


class AuditWrongKey(AuditWriteFailed):
    """The key is not the one the chain was written with: nothing is appended with it."""


class AuditBroken(RuntimeError):
    """The chain does not verify where an operation needs it to (e.g. before pruning)."""


@dataclass(frozen=True)
class AuditEntry:
    """What happened. ``actor``: "user:NAME", "token:ID:NAME", "cli:USER@HOST", "system" or
    "anonymous"; ``action``: dotted, e.g. "host.remove"; ``target``: "host:12", "job:7", ...;
    ``before``/``after``: JSON-able values where they apply; ``outcome``: ok | failed | denied.
    """

    actor: str
    action: str
    target: str = ""
    outcome: str = "ok"
    source: str = ""
    request_id: str = ""
    before: Any = None
    after: Any = None
    detail: str = ""

    def but(self, **changes: Any) -> AuditEntry:
        """A copy with some fields changed (e.g. the target once the action made it)."""
        return replace(self, **changes)


# What a writer is given to record: an entry, a function of the action's result that makes
# one (the id of what it created; None: nothing to record), or None (nothing to record).
AuditArg = AuditEntry | Callable[[Any], AuditEntry | None] | None


@dataclass(frozen=True)
class StoredEntry:
    id: int
    at: dt.datetime
    actor: str
    source: str
    request_id: str
    action: str
    target: str
    before: Any
    after: Any
    outcome: str
    detail: str
    mac: str


@dataclass(frozen=True)
class Checkpoint:
    id: int
    at: dt.datetime
    cutoff: dt.datetime
    last_id: int
    last_mac: str
    count: int
    mac: str


@dataclass(frozen=True)
class Verification:
    """The result of ``verify``: ``ok``, how many entries were checked (ids ``first_id`` to
    ``last_id``) and, when broken, the first broken entry's id and what is wrong with it."""

    ok: bool
    checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    broken_id: int | None = None
    problem: str = ""
    checkpoint: int | None = None  # the checkpoint the chain was verified from, if any


@dataclass
class AuditStats:
    """Process-wide counters for /metrics."""

    written: int = 0
    failed: int = 0
    verified_ok: int = 0
    verified_broken: int = 0
    pruned: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


stats = AuditStats()


# -- canonical form ----------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """``value`` as PostgreSQL's jsonb gives it back: JSON types only, no NUL characters."""
    if value is None:
        return None
    text = json.dumps(value, default=str, ensure_ascii=False).replace("\\u0000", "\\ufffd")
    return _numbers(json.loads(text))


def _numbers(value: Any) -> Any:
    """Floats as jsonb's numeric gives them back: an integral float is an integer (1e16 comes
    back as 10000000000000000), a non-finite one (which jsonb cannot hold) its text."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical(e: StoredEntry) -> bytes:
    """The bytes an entry's MAC covers: sorted keys, no spaces, UTF-8."""
    doc = {
        "id": e.id,
        "at": _stamp(e.at),
        "actor": e.actor,
        "source": e.source,
        "request_id": e.request_id,
        "action": e.action,
        "target": e.target,
        "before": e.before,
        "after": e.after,
        "outcome": e.outcome,
        "detail": e.detail,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, prev: str, payload: bytes) -> str:
    return hmac.new(key, prev.encode("ascii") + payload, hashlib.sha256).hexdigest()


def entry_mac(key: bytes, prev_mac: str, e: StoredEntry) -> str:
    return _mac(key, prev_mac, canonical(e))


def _head_mac(key: bytes, last_id: int, last_mac: str) -> str:
    return _mac(key, "head", f"{last_id}:{last_mac}".encode())


def _checkpoint_mac(key: bytes, prev_mac: str, c: Checkpoint) -> str:
    doc = {
        "id": c.id,
        "at": _stamp(c.at),
        "cutoff": _stamp(c.cutoff),
        "last_id": c.last_id,
        "last_mac": c.last_mac,
        "count": c.count,
    }
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return _mac(key, "checkpoint:" + prev_mac, payload)


def key_check(key: bytes) -> str:
    """What ``audit_head.key_check`` holds for ``key``: it names the key without revealing it."""
    return hmac.new(key, b"patch-manager audit key check", hashlib.sha256).hexdigest()


def _wrong_key(conn: psycopg.Connection[Any], key: bytes) -> bool:
    row = conn.execute("SELECT key_check FROM audit_head").fetchone()
    if row is None or not row[0]:
        return False  # no entry yet, or a head older than the key check
    return not hmac.compare_digest(str(row[0]), key_check(key))


def _check_key(key: bytes | None) -> bytes:
    if not key or len(key) != KEY_BYTES:
        raise AuditKeyMissing(f"the audit key must be {KEY_BYTES} bytes; nothing was written")
    return key


# -- writing -----------------------------------------------------------------------------------

_ENTRY_COLUMNS = (
    "id, at, actor, source, request_id, action, target, before, after, outcome, detail, mac"
)


def append(
    conn: psycopg.Connection[Any],
    key: bytes,
    entry: AuditEntry,
    *,
    at: dt.datetime | None = None,
) -> StoredEntry:
    """Chain ``entry`` onto the log inside the caller's transaction (opened here if there is
    none). Call it LAST in the transaction: it holds the chain's lock until commit. ``at``
    defaults to now (tests and imports may give it)."""
    key = _check_key(key)
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}")
    if not entry.actor or not entry.action:
        raise ValueError("an audit entry needs an actor and an action")
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            head = conn.execute("SELECT last_id, last_mac, key_check FROM audit_head").fetchone()
            if head and head[2] and not hmac.compare_digest(str(head[2]), key_check(key)):
                raise AuditWrongKey(
                    "wrong audit key: the audit log was written with another key (audit.key or "
                    "PM_AUDIT_KEY); nothing was written"
                )
            prev_id, prev_mac = (int(head[0]), str(head[1])) if head else (0, "")
            stored = StoredEntry(
                id=prev_id + 1,
                at=(at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC),
                actor=_text(entry.actor),
                source=_text(entry.source),
                request_id=_text(entry.request_id),
                action=_text(entry.action),
                target=_text(entry.target),
                before=_clean(entry.before),
                after=_clean(entry.after),
                outcome=entry.outcome,
                detail=_text(entry.detail),
                mac="",
            )
            stored = replace(stored, mac=entry_mac(key, prev_mac, stored))
            conn.execute(
                f"INSERT INTO audit_entries ({_ENTRY_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    stored.id, stored.at, stored.actor, stored.source, stored.request_id,
                    stored.action, stored.target, _jsonb(stored.before), _jsonb(stored.after),
                    stored.outcome, stored.detail, stored.mac,
                ),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO audit_head (one, last_id, last_mac, mac, key_check)"
                " VALUES (true, %s, %s, %s, %s)"
                " ON CONFLICT (one) DO UPDATE SET last_id = excluded.last_id,"
                " last_mac = excluded.last_mac, mac = excluded.mac,"
                " key_check = excluded.key_check",
                (stored.id, stored.mac, _head_mac(key, stored.id, stored.mac), key_check(key)),
            )
    except (psycopg.OperationalError, AuditWrongKey):  # went away: DatabaseUnavailable upstream
        stats.add("failed")
        raise
    except psycopg.Error as exc:
        stats.add("failed")
        reason = exc.diag.message_primary or str(exc)
        raise AuditWriteFailed(f"the audit entry could not be written: {reason}") from exc
    stats.add("written")
    return stored


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value)


async def run_audited(
    db: Database,
    entry: AuditArg,
    fn: Callable[..., T],
    *args: Any,
) -> T:
    """Run ``fn(conn, *args)`` and append ``entry`` in ONE transaction; returns fn's result.

    ``entry`` may be a function of that result (a target known only once the action made it;
    returning None records nothing, e.g. when the action turned out to change nothing).
    If the append fails, the action is rolled back and the error propagates. ``entry=None``
    runs ``fn`` alone (callers that have nothing to record, e.g. the scheduler's own writes).
    """
    if entry is None:
        return await db.run(fn, *args)
    key = _check_key(db.audit_key)

    def job(conn: psycopg.Connection[Any]) -> T:
        with conn.transaction():
            result = fn(conn, *args)
            made = entry(result) if callable(entry) else entry
            if made is not None:
                append(conn, key, made)
            return result

    return await db.run(job)


async def record(db: Database, entry: AuditEntry) -> StoredEntry:
    """Append an entry on its own (an outcome that changed nothing: a failed login, a denied
    action, a report download)."""
    key = _check_key(db.audit_key)
    return await db.run(append, key, entry)


# -- reading -----------------------------------------------------------------------------------


def _entry(row: Sequence[Any]) -> StoredEntry:
    return StoredEntry(
        id=int(row[0]), at=row[1].astimezone(dt.UTC), actor=row[2], source=row[3],
        request_id=row[4], action=row[5], target=row[6], before=row[7], after=row[8],
        outcome=row[9], detail=row[10], mac=row[11],
    )  # fmt: skip


@dataclass(frozen=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actor: str = ""  # exact, or a prefix ending in ':' or '*' ("user:", "token:*")
    action: str = ""  # exact, or a prefix ending in '.' or '*' ("host.", "job.*")
    target: str = ""  # exact ("host:12") or a prefix ending in ':' or '*'
    outcome: str = ""
    limit: int = 100
    before_id: int | None = None  # keyset paging: entries with a smaller id (newest first)
    count_cap: int = 10_000  # count matches up to this; more answers count_cap + 1 ("more than")


def _prefix_or_exact(column: str, value: str, where: list[str], params: list[Any]) -> None:
    if not value:
        return
    if value.endswith("*") or value.endswith(":") or value.endswith("."):
        stem = value.rstrip("*")
        escaped = stem.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(f"{column} LIKE %s")
        params.append(escaped + "%")
    else:
        where.append(f"{column} = %s")
        params.append(value)


def _where(f: AuditFilter) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("at >= %s")
        params.append(f.since)
    if f.until is not None:
        where.append("at < %s")
        params.append(f.until)
    _prefix_or_exact("actor", f.actor, where, params)
    _prefix_or_exact("action", f.action, where, params)
    _prefix_or_exact("target", f.target, where, params)
    if f.outcome:
        where.append("outcome = %s")
        params.append(f.outcome)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def list_entries(conn: psycopg.Connection[Any], f: AuditFilter) -> tuple[list[StoredEntry], int]:
    """One page of matching entries, newest first, and the number of matches up to
    ``f.count_cap`` (``count_cap + 1`` means more: a count never scans the whole log)."""
    where, params = _where(f)
    total = _scalar(
        conn,
        f"SELECT count(*) FROM (SELECT 1 FROM audit_entries{where} LIMIT %s) AS capped",
        [*params, f.count_cap + 1],
    )
    page_where, page_params = where, list(params)
    if f.before_id is not None:
        page_where += (" AND " if where else " WHERE ") + "id < %s"
        page_params.append(f.before_id)
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_entries{page_where} ORDER BY id DESC LIMIT %s",
        [*page_params, f.limit],
    ).fetchall()
    return [_entry(r) for r in rows], total


def entries_after(
    conn: psycopg.Connection[Any], f: AuditFilter, after_id: int, limit: int = _PAGE
) -> list[StoredEntry]:
    """Matching entries with an id above ``after_id``, oldest first (one page of an export)."""
    where, params = _where(f)
    page_where = where + (" AND " if where else " WHERE ") + "id > %s"
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_entries{page_where} ORDER BY id LIMIT %s",
        [*params, after_id, limit],
    ).fetchall()
    return [_entry(r) for r in rows]


def iter_entries(conn: psycopg.Connection[Any], f: AuditFilter) -> Iterator[list[StoredEntry]]:
    """Every matching entry, oldest first, in pages (on one connection)."""
    after = 0
    while page := entries_after(conn, f, after):
        yield page
        after = page[-1].id


def get_entry(conn: psycopg.Connection[Any], entry_id: int) -> StoredEntry | None:
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE id = %s", (entry_id,)
    ).fetchone()
    return _entry(row) if row else None


def _scalar(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def head_id(conn: psycopg.Connection[Any]) -> int:
    """The id of the newest entry ever written (0 before the first): /metrics exports it so a
    monitor outside the database notices when it goes backwards or the log is emptied."""
    row = conn.execute("SELECT last_id FROM audit_head").fetchone()
    return int(row[0]) if row else 0


def count_entries(conn: psycopg.Connection[Any]) -> int:
    return _scalar(conn, "SELECT count(*) FROM audit_entries")


def _checkpoints(conn: psycopg.Connection[Any]) -> list[Checkpoint]:
    rows = conn.execute(
        "SELECT id, at, cutoff, last_id, last_mac, count, mac FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    return [Checkpoint(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5]), r[6]) for r in rows]


# -- verifying ---------------------------------------------------------------------------------


def _broken(checked: int, first: int | None, last: int | None, broken: int | None, problem: str,
            checkpoint: int | None) -> Verification:  # fmt: skip
    stats.add("verified_broken")
    return Verification(False, checked, first, last, broken, problem, checkpoint)


def verify(
    conn: psycopg.Connection[Any], key: bytes, since: dt.datetime | None = None
) -> Verification:
    """Walk the chain (from the newest checkpoint, or from the entry before ``since``) and name
    the first broken link. Reads one consistent snapshot, in pages."""
    key = _check_key(key)
    fresh = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if fresh:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _verify(conn, key, since)


def _verify(
    conn: psycopg.Connection[Any], key: bytes, since: dt.datetime | None, upto: int | None = None
) -> Verification:
    """``upto``: check the entries up to that id only (they must all be there), not the head."""
    if _wrong_key(conn, key):
        problem = "wrong key: the audit log was written with another key (audit.key or "
        return _broken(0, None, None, None, problem + "PM_AUDIT_KEY); no entry was checked", None)
    prev_id, prev_mac, checkpoint = 0, "", None
    cp_prev = ""
    for c in _checkpoints(conn):
        if c.mac != _checkpoint_mac(key, cp_prev, c):
            return _broken(0, None, None, c.last_id, f"checkpoint {c.id} was edited", c.id)
        if c.last_id < prev_id:
            return _broken(0, None, None, c.last_id, f"checkpoint {c.id} goes backwards", c.id)
        cp_prev, prev_id, prev_mac, checkpoint = c.mac, c.last_id, c.last_mac, c.id
    if since is not None:
        row = conn.execute(
            "SELECT min(id) FROM audit_entries WHERE at >= %s AND id > %s", (since, prev_id)
        ).fetchone()
        start = row[0] if row else None
        if start is not None and int(start) - 1 > prev_id:
            anchor = get_entry(conn, int(start) - 1)
            if anchor is None:
                return _broken(0, None, None, int(start) - 1, f"entry {int(start) - 1} is missing"
                               " (deleted)", checkpoint)  # fmt: skip
            prev_id, prev_mac = anchor.id, anchor.mac
    first: int | None = None
    checked = 0
    while True:
        rows = conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE id > %s AND id <= %s"
            " ORDER BY id LIMIT %s",
            (prev_id, upto if upto is not None else 2**62, _PAGE),
        ).fetchall()
        if not rows:
            break
        for row in rows:
            e = _entry(row)
            first = e.id if first is None else first
            if e.id != prev_id + 1:
                missing = prev_id + 1
                return _broken(checked, first, prev_id or None, missing,
                               f"entry {missing} is missing (deleted)", checkpoint)  # fmt: skip
            if not hmac.compare_digest(e.mac, entry_mac(key, prev_mac, e)):
                return _broken(checked, first, prev_id or None, e.id,
                               f"entry {e.id} does not match its MAC (edited, inserted or "
                               "reordered)", checkpoint)  # fmt: skip
            prev_id, prev_mac = e.id, e.mac
            checked += 1
    last = prev_id if checked else None
    if upto is not None:
        if prev_id < upto:
            return _broken(checked, first, last, prev_id + 1,
                           f"entry {prev_id + 1} is missing (deleted)", checkpoint)  # fmt: skip
        stats.add("verified_ok")
        return Verification(True, checked, first, last, None, "", checkpoint)
    head = conn.execute("SELECT last_id, last_mac, mac FROM audit_head").fetchone()
    if head is None:
        if prev_id:
            return _broken(checked, first, last, prev_id, "the chain head is missing", checkpoint)
    else:
        h_id, h_mac, h_sig = int(head[0]), str(head[1]), str(head[2])
        if not hmac.compare_digest(h_sig, _head_mac(key, h_id, h_mac)):
            return _broken(checked, first, last, h_id, "the chain head was edited", checkpoint)
        if h_id > prev_id:
            return _broken(checked, first, last, prev_id + 1,
                           f"entries {prev_id + 1} to {h_id} are missing (deleted at the end)",
                           checkpoint)  # fmt: skip
        if h_id != prev_id or h_mac != prev_mac:
            added = f"entry {h_id + 1} was added after the chain head"
            return _broken(checked, first, last, h_id + 1, added, checkpoint)
    stats.add("verified_ok")
    return Verification(True, checked, first, last, None, "", checkpoint)


# -- pruning -----------------------------------------------------------------------------------


def prune_audit(
    conn: psycopg.Connection[Any], key: bytes, cutoff: dt.datetime, batch: int = 1000
) -> int:
    """Delete the entries older than ``cutoff`` (the oldest contiguous run of them), after
    checking that run's chain and writing a signed checkpoint at the cut; deletes in
    transactions of at most ``batch`` rows. Returns the number deleted. Raises ``AuditBroken``
    (and deletes nothing) when the chain up to the cut does not verify."""
    key = _check_key(key)
    # 1. Plan and verify in one snapshot WITHOUT the chain's lock (writers only ever add entries
    #    after the head; the entries up to the cut are older than the cutoff and never change).
    fresh = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if fresh:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        checkpoints = _checkpoints(conn)
        prev = checkpoints[-1] if checkpoints else None
        base = prev.last_id if prev else 0
        row = conn.execute(
            "SELECT min(id) FROM audit_entries WHERE at >= %s AND id > %s", (cutoff, base)
        ).fetchone()
        if row and row[0] is not None:
            cut = int(row[0]) - 1
        else:
            top = conn.execute("SELECT max(id) FROM audit_entries").fetchone()
            cut = int(top[0]) if top and top[0] is not None else base
        cut_mac = ""
        if cut > base:
            result = _verify(conn, key, None, upto=cut)
            if not result.ok:
                raise AuditBroken(f"not pruning a broken chain: {result.problem}")
            last = get_entry(conn, cut)
            if last is None:  # verified above; cannot happen
                raise AuditBroken(f"entry {cut} is missing")
            cut_mac = last.mac
    # 2. Under the lock only long enough to see that nothing moved and write the checkpoint.
    if cut > base:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            now = _checkpoints(conn)
            if (now[-1].id if now else 0) != (prev.id if prev else 0):
                raise AuditBroken("another prune wrote a checkpoint meanwhile; not pruning")
            last = get_entry(conn, cut)
            if last is None or not hmac.compare_digest(last.mac, cut_mac):
                raise AuditBroken(f"entry {cut} changed while it was verified; not pruning")
            cp = Checkpoint(
                id=(prev.id + 1) if prev else 1,
                at=dt.datetime.now(dt.UTC),
                cutoff=cutoff.astimezone(dt.UTC),
                last_id=cut,
                last_mac=cut_mac,
                count=cut,
                mac="",
            )
            cp = replace(cp, mac=_checkpoint_mac(key, prev.mac if prev else "", cp))
            conn.execute(
                "INSERT INTO audit_checkpoints (id, at, cutoff, last_id, last_mac, count, mac)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (cp.id, cp.at, cp.cutoff, cp.last_id, cp.last_mac, cp.count, cp.mac),
            )
    # Also finish a prune interrupted after its checkpoint (rows up to the last cut).
    cut = max(cut, base)
    deleted = 0
    while True:
        with conn.transaction():
            n = conn.execute(
                "DELETE FROM audit_entries WHERE id IN (SELECT id FROM audit_entries"
                " WHERE id <= %s ORDER BY id LIMIT %s)",
                (cut, batch),
            ).rowcount
        deleted += n
        if n < batch:
            break
    stats.add("pruned", deleted)
    return deleted


def last_of_action(conn: psycopg.Connection[Any], action: str) -> StoredEntry | None:
    """The newest entry of ``action`` (e.g. the last "audit.verify": the page's status)."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM audit_entries WHERE action = %s ORDER BY id DESC LIMIT 1",
        (action,),
    ).fetchone()
    return _entry(row) if row else None


def latest_checkpoint(conn: psycopg.Connection[Any]) -> Checkpoint | None:
    cps = _checkpoints(conn)
    return cps[-1] if cps else None
