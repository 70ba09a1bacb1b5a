"""The audit log for admins and auditors (R-9.1): entries by filter, a streamed CSV export and
the chain's verification. Reading the log, exporting it and verifying it are audited too."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from reports.csv_out import cell
from storage import AuditFilter, StoredEntry, Verification
from storage.audit import entries_after, last_of_action, list_entries, verify
from storage.reports import host_labels

from .. import audit
from ..audit_models import AuditFilters, AuditQuery
from ..authz import Action, require
from .base import Principal, System

CSV_HEADER = ("id", "at", "actor", "source", "request_id", "action", "target", "outcome",
              "detail", "before", "after", "mac")  # fmt: skip
VERIFY = "audit.verify"


def _filter(q: AuditFilters, limit: int = 100, before_id: int | None = None) -> AuditFilter:
    return AuditFilter(
        since=q.since, until=q.until, actor=q.actor.strip(), action=q.action.strip(),
        target=q.target.strip(), outcome=q.outcome or "", limit=limit, before_id=before_id,
    )  # fmt: skip


async def entries(sys: System, who: Principal, q: AuditQuery) -> tuple[list[StoredEntry], int]:
    """One page of matching entries (newest first) and the number of matches."""
    require(who, Action.VIEW_AUDIT)
    return await sys.db.run(list_entries, _filter(q, q.limit, q.before_id))


HOST_TARGET = re.compile(r"\bhost:(\d{1,18})\b")


def target_host_ids(target: str) -> list[int]:
    """The host ids an entry's target names (``host:12``, ``host:1,host:2 …``)."""
    return [int(m) for m in HOST_TARGET.findall(target)]


async def target_hosts(
    sys: System, found: Sequence[StoredEntry]
) -> dict[int, list[tuple[str, str]]]:
    """entry id → (display name, address) of each host its target names that still exists (a
    removed host's entries show its id only: its old name is in the entry's details)."""
    ids = sorted({i for e in found for i in target_host_ids(e.target)})
    if not ids:
        return {}
    labels = await sys.db.run(host_labels, ids)
    named = {e.id: [labels[i] for i in target_host_ids(e.target) if i in labels] for e in found}
    return {entry: hosts for entry, hosts in named.items() if hosts}


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _csv(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([cell(v) for v in r] for r in rows)
    return buffer.getvalue()


async def export_csv(sys: System, who: Principal, q: AuditFilters) -> AsyncIterator[str]:
    """The matching entries as CSV chunks, oldest first, read one page at a time while sent.
    The export itself is recorded before the first byte."""
    require(who, Action.VIEW_AUDIT)
    f = _filter(q)
    filters = q.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    await audit.record(sys, audit.entry(who, "audit.export", "audit", after=filters))
    first = await sys.db.run(entries_after, f, 0)

    async def chunks() -> AsyncIterator[str]:
        yield _csv([CSV_HEADER])
        page = first
        while page:
            yield _csv(
                [
                    (e.id, e.at, e.actor, e.source, e.request_id, e.action, e.target, e.outcome,
                     e.detail, _json(e.before), _json(e.after), e.mac)
                    for e in page
                ]
            )  # fmt: skip
            page = await sys.db.run(entries_after, f, page[-1].id)

    return chunks()


async def verify_now(sys: System, who: Principal, since: Any = None) -> Verification:
    """Verify the chain now; the result is recorded (outcome ok or failed, naming the first
    broken entry), so the page shows the last verification."""
    require(who, Action.VIEW_AUDIT)
    key = sys.db.audit_key
    if key is None:
        raise RuntimeError("the audit key is not available")
    result: Verification = await sys.db.run(lambda conn: verify(conn, key, since))
    entry = audit.entry(
        who, VERIFY, "audit", outcome="ok" if result.ok else "failed",
        after=dataclasses.asdict(result) | {"since": since.isoformat() if since else None},
        detail=result.problem,
    )  # fmt: skip
    await audit.record(sys, entry)
    return result


async def last_verification(sys: System, who: Principal) -> StoredEntry | None:
    require(who, Action.VIEW_AUDIT)
    return await sys.db.run(last_of_action, VERIFY)
