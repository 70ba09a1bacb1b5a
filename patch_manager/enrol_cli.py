"""``patch-manager enroll list|approve|deny``: the agent enrolment queue from the shell.

Approval registers the host in the database (the running server starts its actor, as for
``hosts add``); the agent receives its certificate at its next status poll.
"""

from __future__ import annotations

import argparse
from typing import Any

from actors import AddressPolicy, RegistrationError
from actors.registration import register
from settings import Config
from storage import (
    AuditEntry,
    Conflict,
    Database,
    NotFound,
    decide_enrolment,
    enrolled_host,
    get_enrolment,
    list_enrolments,
    run_audited,
)

from .audit_cli import cli_actor
from .hosts_cli import CommandError


def add_parsers(sub: Any, common: Any) -> None:
    enroll = sub.add_parser("enroll", help="the agent enrolment queue (approve or deny)")
    actions = enroll.add_subparsers(dest="enroll_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="pending requests (--all: every request)")
    common(p)
    p.add_argument("--all", action="store_true", help="also decided, expired and delivered ones")
    p = actions.add_parser("approve", help="approve a request: register the host")
    common(p)
    p.add_argument("id", type=int, help="request id (from `enroll list`)")
    p.add_argument("--group", help="group of the new host")
    p = actions.add_parser("deny", help="deny a request")
    common(p)
    p.add_argument("id", type=int, help="request id (from `enroll list`)")


def os_label(os_details: dict[str, Any]) -> str:
    """ "Ubuntu 24.04": the real agent sends ``distro`` and ``version`` (os-release NAME and
    VERSION_ID); ``name``/``version_id`` are read when those are missing."""
    name = os_details.get("distro") or os_details.get("name") or ""
    version = os_details.get("version") or os_details.get("version_id") or ""
    return f"{name} {version}".strip()


async def _pending(db: Database, enrolment_id: int) -> Any:
    try:
        row = await db.run(get_enrolment, enrolment_id)
    except NotFound as exc:
        raise CommandError(str(exc)) from None
    if row.status != "pending":
        raise CommandError(f"enrolment request {enrolment_id} is {row.status}, not pending")
    return row


async def enroll_command(args: argparse.Namespace, config: Config, db: Database) -> None:
    action = args.enroll_command
    if action == "list":
        rows = await db.run(lambda conn: list_enrolments(conn, pending_only=not args.all))
        print(f"{'ID':>5}  {'STATUS':<10} {'MACHINE':<32} {'FQDN':<32} {'IP':<16} {'FROM':<16} "
              f"{'OS':<24} EXPIRES")  # fmt: skip
        for r in rows:
            expires, os_name = f"{r.expires_at:%Y-%m-%d %H:%M}", os_label(r.os_details)[:24]
            print(f"{r.id:>5}  {r.status:<10} {r.machine_id:<32} {r.fqdn:<32} {r.ip_address:<16} "
                  f"{r.source_address:<16} {os_name:<24} {expires}")  # fmt: skip
        print(f"{len(rows)} request(s)")
    elif action == "approve":
        row = await _pending(db, args.id)
        groups = [args.group] if args.group else []
        host_id = await db.run(enrolled_host, row.machine_id)  # a renewal keeps its host
        if host_id is None:
            try:
                host = await register(db, row.ip_address, port=config.agents.port,
                                      policy=AddressPolicy.from_config(config),
                                      resolve_timeout=config.agents.resolve_timeout_s,
                                      display_name=row.fqdn, groups=groups,
                                      audit=lambda h: AuditEntry(
                                          cli_actor(), "host.add", f"host:{h.id}",
                                          after={"name": h.name, "display_name": h.display_name},
                                          detail=f"enrolment {args.id}"))  # fmt: skip
            except RegistrationError as exc:
                raise CommandError(str(exc)) from None
            host_id = host.id
        try:
            await run_audited(
                db,
                AuditEntry(cli_actor(), "enrolment.approve", f"enrolment:{args.id}",
                           after={"fqdn": row.fqdn, "machine_id": row.machine_id,
                                  "host_id": host_id, "group": args.group}),
                lambda conn: decide_enrolment(
                    conn, args.id, approve=True, decided_by="cli", group_name=args.group,
                    host_id=host_id,
                ),
            )  # fmt: skip
        except Conflict as exc:
            raise CommandError(str(exc)) from None
        print(f"approved request {args.id}: host {host_id} {row.ip_address} ({row.fqdn}); "
              "the agent gets its certificate at its next poll")  # fmt: skip
    elif action == "deny":
        await _pending(db, args.id)
        try:
            await run_audited(
                db,
                AuditEntry(cli_actor(), "enrolment.deny", f"enrolment:{args.id}"),
                lambda conn: decide_enrolment(conn, args.id, approve=False, decided_by="cli"),
            )
        except Conflict as exc:
            raise CommandError(str(exc)) from None
        print(f"denied request {args.id}")
