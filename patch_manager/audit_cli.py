"""`patch-manager audit …`: verify the audit chain, list entries (on the database directly).

``audit verify [--since DATE]`` exits 0 when the chain verifies and 1 naming the first broken
entry otherwise. ``cli_actor()`` is the actor of every audited command-line change.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import logging
import socket
from typing import Any

from settings import Config, ConfigStore
from storage import AuditEntry, AuditFilter, Database, StorageError
from storage.audit import list_entries, record, verify

log = logging.getLogger(__name__)

EXIT_BROKEN = 1


def cli_actor() -> str:
    """``cli:USER@HOST``: who ran a command that changed something."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def parse_since(text: str) -> dt.datetime:
    """A date (``2026-01-31``) or an ISO time; UTC when no zone is given."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def add_parsers(sub: Any, common: Any) -> None:
    audit = sub.add_parser("audit", help="verify and read the tamper-evident audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = actions.add_parser("verify", help="check the chain; exit 1 naming the first broken entry")
    common(p)
    p.add_argument("--since", type=parse_since, help="start at the first entry of this date/time")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("list", help="the newest entries (newest first)")
    common(p)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--actor", default="", help="exact, or a prefix ending in ':' or '*'")
    p.add_argument("--action", default="", help="exact, or a prefix ending in '.' or '*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")


async def audit_command(args: argparse.Namespace, db: Database) -> int:
    from .hosts_cli import CommandError  # (hosts_cli imports cli_actor from here)

    key = db.audit_key
    if key is None:
        raise CommandError("the audit key is not available")
    if args.audit_command == "verify":
        result = await db.run(lambda conn: verify(conn, key, args.since))
        if args.json:
            print(json.dumps({
                "ok": result.ok, "checked": result.checked, "first_id": result.first_id,
                "last_id": result.last_id, "broken_id": result.broken_id,
                "problem": result.problem, "checkpoint": result.checkpoint,
            }))  # fmt: skip
        elif result.ok:
            span = f" (entries {result.first_id} to {result.last_id})" if result.checked else ""
            origin = f", from checkpoint {result.checkpoint}" if result.checkpoint else ""
            print(f"audit chain verified: {result.checked} entries{span}{origin}")
        elif result.broken_id is None:  # not one entry: the key
            print(f"audit chain BROKEN: {result.problem}")
        else:
            print(f"audit chain BROKEN at entry {result.broken_id}: {result.problem}")
        return 0 if result.ok else EXIT_BROKEN
    if args.limit < 1 or args.limit > 10_000:
        raise CommandError("--limit must be between 1 and 10000")
    f = AuditFilter(actor=args.actor, action=args.action, limit=args.limit)
    entries, total = await db.run(list_entries, f)
    if args.json:
        print(json.dumps([
            {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "source": e.source,
             "request_id": e.request_id, "action": e.action, "target": e.target,
             "before": e.before, "after": e.after, "outcome": e.outcome, "detail": e.detail}
            for e in entries
        ]))  # fmt: skip
    else:
        for e in entries:
            print(f"{e.id:>8} {e.at.isoformat(timespec='seconds')} {e.outcome:<6} "
                  f"{e.actor} {e.action} {e.target} {e.detail}".rstrip())  # fmt: skip
        print(f"({len(entries)} of {total})")
    return 0


def _sections(config: Config) -> dict[str, str]:
    return {f.name: repr(getattr(config, f.name)) for f in dataclasses.fields(config)
            if f.name != "files"}  # fmt: skip


async def audit_config_reloads(store: ConfigStore, db: Database) -> None:
    """Record every configuration change a reload applied (SIGHUP or an edited file), by
    ``system``, naming the sections that changed. Runs until cancelled."""
    version, config = store.version, store.current
    while True:
        version, new = await store.wait_changed(version)
        old_s, new_s = _sections(config), _sections(new)
        changed = sorted(k for k in new_s.keys() | old_s.keys() if old_s.get(k) != new_s.get(k))
        config = new
        entry = AuditEntry(
            "system", "config.reload", "config", after={"version": version, "changed": changed}
        )
        try:
            await record(db, entry)
        except StorageError as exc:  # the reload stands; the log says the entry is missing
            log.error("audit entry for configuration reload %d not written: %s", version, exc)
        else:
            log.info("configuration version %d recorded in the audit log", version)
