"""`patch-manager hosts …` and `patch-manager discover`: they work on the database directly.

A running server notices every change within a second (PostgreSQL NOTIFY from a trigger on the
hosts table) and ``hosts refresh`` is passed to it the same way; without a server the changes
simply wait in the database for the next start.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import trio
from pydantic import BaseModel

from actors import AddressPolicy, DiscoveryError, RegistrationError
from actors.discovery import Found, ScanProgress, addresses, parse_range, scan
from actors.persist import DatabaseDiscoveryStore
from actors.registration import register
from actors.state import STALE_FACTOR
from ca import AgentPeerPolicy, CertificateAuthority, agent_client_context
from settings import Config, effective_policy
from storage import (
    AuditEntry,
    Database,
    HostEntry,
    HostFilter,
    HostListItem,
    HostRow,
    delete_host,
    get_host,
    last_health_change,
    refused_agent_serials,
    request_host_refresh,
    run_audited,
    search_hosts,
)
from web.freshness import age
from web.models import HostList
from web.services.hosts import entry

from .audit_cli import cli_actor


class CommandError(Exception):
    """Reported as one line by the command line."""


def add_parsers(sub: Any, common: Any) -> None:
    hosts = sub.add_parser("hosts", help="register, list, remove and refresh hosts")
    actions = hosts.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="register a host by FQDN or IP address")
    common(p)
    p.add_argument("name", help="FQDN or IP address of the agent")
    p.add_argument("--display-name", default="")
    p.add_argument("--group", action="append", default=[], help="group (repeatable)")
    p.add_argument("--port", type=int, help="agent port (default agents.port)")
    p = actions.add_parser("list", help="list hosts with their health and pending patches")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("remove", help="remove a host (its actor stops)")
    common(p)
    p.add_argument("host", help="host name or id")
    p = actions.add_parser("refresh", help="ask the running server to poll hosts now")
    common(p)
    p.add_argument("hosts", nargs="*", help="host names or ids (default: all)")

    p = sub.add_parser("discover", help="scan an IPv4 range for agents")
    common(p)
    p.add_argument("cidr", help="range such as 10.0.0.0/24 (at most discovery.min_prefix_len)")
    p.add_argument("--register", action="store_true", help="register every agent found")


def _key(text: str) -> int | str:
    return int(text) if text.isdigit() else text.strip().lower()


def _entry(action: str, row: HostRow) -> AuditEntry:
    """The audit entry of a command-line change to a host (actor ``cli:USER@HOST``)."""
    view = {"name": row.name, "address": row.address, "port": row.port, "groups": list(row.groups)}
    entry = AuditEntry(cli_actor(), action, f"host:{row.id}")
    return entry.but(before=view) if action == "host.remove" else entry.but(after=view)


NO_LIVE_DATA = "no live data: the server's view is at /api/v1/hosts"
# Conditions read from the stored health of the last poll: the command line has no actor, so
# it cannot tell whether the polls since are failing; it never claims them as of now.
_AS_STORED = frozenset({"healthy", "degraded", "unreachable"})


async def all_hosts(
    db: Database,
    *,
    stale_s: float | None = None,
    now: dt.datetime | None = None,
    config: Config | None = None,
) -> list[HostEntry]:
    """Every host as the API lists it (``GET /api/v1/hosts``: the same SQL, in its order, the
    shown name natural-sorted), from what is stored (the command line sees no live actor):
    ``stale`` once its last poll is older than ``stale_s``; otherwise the condition is
    ``unknown`` and ``why`` says so (with the stored health and when it was last seen), never a
    ``healthy`` the server may no longer see. ``health_since`` is the last stored health
    change; ``retries_total`` the host's policy (``config``: its backoff steps)."""
    rows: list[HostListItem] = []
    while True:
        page, total = await db.run(search_hosts, HostFilter(limit=1000, offset=len(rows)))
        rows += page
        if not page or len(rows) >= total:
            break
    now = now or dt.datetime.now(dt.UTC)
    changes = await db.run(lambda conn: {r.id: last_health_change(conn, r.id) for r in rows})
    return [_as_stored(entry(r, None, stale_s=stale_s, now=now), changes.get(r.id), config, now)
            for r in rows]  # fmt: skip


def _as_stored(
    e: HostEntry, since: dt.datetime | None, config: Config | None, now: dt.datetime
) -> HostEntry:
    retries = (
        len(effective_policy(config, e.name, e.groups).policy.backoff_s)
        if config is not None
        else e.retries_total
    )
    e = dataclasses.replace(e, health_since=since, retries_total=retries)
    if e.condition not in _AS_STORED:
        return e
    seen = f", last seen {age(e.last_seen_at, now)}" if e.last_seen_at else ""
    why = f"{NO_LIVE_DATA} (stored health {e.health}{seen})"
    return dataclasses.replace(e, condition="unknown", why=why)


def stale_window(config: Config) -> float:
    """Seconds after a successful poll when the host's data is stale (as the actors' rule:
    two health intervals plus one poll's deadlines), from the global polling policy."""
    p = config.polling
    grace = p.connect_timeout_s + 2 * p.request_timeout_s
    return p.health_interval_s * STALE_FACTOR + grace


def api_reply(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """What the API answers with ``model`` and ``fields`` (serialised as
    ``web.models_io.reply`` does): every ``--json`` output of the command line is an API reply,
    with the same fields, types and time format."""
    reply: dict[str, Any] = json.loads(model.model_construct(**fields).model_dump_json())
    return reply


def hosts_listing(rows: list[HostEntry]) -> dict[str, Any]:
    """The API's reply (``HostList``: hosts, total, limit, offset) for every host, as
    ``GET /api/v1/hosts``."""
    return api_reply(HostList, hosts=rows, total=len(rows), limit=len(rows), offset=0)


def hosts_json(rows: list[HostEntry]) -> list[Any]:
    """The API's host items (``HostList.hosts``)."""
    hosts: list[Any] = hosts_listing(rows)["hosts"]
    return hosts


async def hosts_command(args: argparse.Namespace, config: Config, db: Database) -> None:
    action = args.hosts_command
    if action == "add":
        try:
            row = await register(db, args.name, port=args.port or config.agents.port,
                                 policy=AddressPolicy.from_config(config),
                                 resolve_timeout=config.agents.resolve_timeout_s,
                                 display_name=args.display_name, groups=args.group,
                                 audit=lambda r: _entry("host.add", r))  # fmt: skip
        except RegistrationError as exc:
            raise CommandError(str(exc)) from None
        print(f"registered host {row.id}: {row.name} ({row.address}:{row.port})")
    elif action == "list":
        rows = await all_hosts(db, stale_s=stale_window(config), config=config)
        if args.json:
            print(json.dumps(hosts_listing(rows)))
            return
        print(f"{'ID':>5}  {'NAME':<28} {'CONDITION':<10} {'STORED':<11} {'PATCHES':>7} "
              f"{'SEC':>4}  REBOOT  GROUPS")  # fmt: skip
        for r in rows:
            reboot, shown = "yes" if r.pending_reboot else "", r.display_name or r.name
            print(f"{r.id:>5}  {shown:<28} {r.condition:<10} {r.health:<11} "
                  f"{r.pending_patches:>7} {r.security_patches:>4}  {reboot:<6}  "
                  f"{','.join(r.groups)}")  # fmt: skip
        print(f"{len(rows)} host(s); STORED is the health of the last poll ({NO_LIVE_DATA})")
    elif action == "remove":
        removed = await run_audited(
            db, lambda r: _entry("host.remove", r), delete_host, _key(args.host)
        )
        print(f"removed host {removed.id}: {removed.name}")
    elif action == "refresh":
        ids = [(await db.run(get_host, _key(h))).id for h in args.hosts]
        what = AuditEntry(cli_actor(), "host.refresh", ",".join(f"host:{i}" for i in ids[:20])
                          or "hosts:all", after={"hosts": len(ids)})  # fmt: skip
        await run_audited(db, what, request_host_refresh, ids)
        print(f"asked the server to poll {len(ids) or 'all'} host(s) now")


async def discovery_context(
    db: Database, ca: CertificateAuthority
) -> tuple[ssl.SSLContext, AgentPeerPolicy]:
    """The agent client context with the server's peer policy: revoked agent certificates and
    the manager's own (root, client, web) are refused, as the running server refuses them."""
    revoked, not_agent = await db.run(refused_agent_serials)
    policy = AgentPeerPolicy(revoked=revoked, not_agent={*not_agent, *ca.own_serials()})
    ctx = agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path, policy)
    return ctx, policy


async def discover_command(
    args: argparse.Namespace, config: Config, db: Database, data_dir: Path
) -> None:
    policy = AddressPolicy.from_config(config)
    try:
        network = parse_range(
            args.cidr, min_prefix_len=config.discovery.min_prefix_len, policy=policy
        )
    except DiscoveryError as exc:
        raise CommandError(str(exc)) from None
    ca = await trio.to_thread.run_sync(CertificateAuthority, data_dir / "ca")
    ctx, _ = await discovery_context(db, ca)
    store = DatabaseDiscoveryStore(db)
    total = len(addresses(network, policy))
    scan_id = await store.create(
        str(network), total,
        lambda s: AuditEntry(cli_actor(), "discovery.scan", f"scan:{s}", after={"cidr": args.cidr}),
    )  # fmt: skip
    interactive = sys.stderr.isatty()

    def progress(p: ScanProgress) -> None:
        if interactive:
            print(f"\rprobed {p.probed}/{p.total}, found {p.found}", end="", file=sys.stderr)

    found: list[Found] = await scan(
        network, port=config.agents.port, ssl_context=ctx,
        concurrency=config.discovery.concurrency,
        connect_timeout=config.discovery.connect_timeout_s,
        on_progress=progress, on_found=lambda f: None, policy=policy,
    )  # fmt: skip
    if interactive:
        print(file=sys.stderr)
    await store.add(scan_id, found)
    await store.progress(scan_id, ScanProgress(str(network), total, total, len(found), True),
                         "finished")  # fmt: skip
    for f in found:
        print(f"{f.address:<16} {f.hostname:<24} {f.os:<34} agent {f.agent_version}")
    print(f"scan {scan_id}: {len(found)} agent(s) in {network}")
    if args.register:
        for f in found:
            try:
                row = await register(db, f.address, port=config.agents.port, policy=policy,
                                     display_name=f.hostname,
                                     audit=lambda r: _entry("discovery.register", r))  # fmt: skip
                print(f"registered host {row.id}: {row.name}")
            except RegistrationError as exc:
                print(f"skipped {f.address}: {exc}")
