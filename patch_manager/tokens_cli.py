"""`patch-manager tokens …`: API tokens from the command line (automation, first-time setup).

``tokens create USER --scope read|operate|metrics [--expires-days N] [--name NAME] [--group G]``
prints the new token once (stored only as its SHA-256); ``tokens list [USER] [--json]`` (the
JSON is the API's reply to ``GET /api/v1/tokens``);
``tokens revoke ID``. The rules are the web layer's (``web.tokens``): a scope the user's role
has no rights in is refused, the expiry is at most ``auth.token_max_days``, a group restriction
only within the user's own groups (admins: any group). Creation and revocation are audited with
the ``cli:USER@HOST`` actor.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from ca import Sealer
from settings import Config
from storage import Database, get_user, list_groups, load_principal
from storage.tokens import TokenItem, list_tokens
from web.authz import Principal
from web.handle import HandleError, Missing
from web.tokens import Tokens
from web.tokens_api import TokenList

from .audit_cli import cli_actor
from .hosts_cli import CommandError, api_reply

SCOPES = ("read", "operate", "metrics")


def add_parsers(sub: Any, common: Any) -> None:
    tokens = sub.add_parser("tokens", help="create, list and revoke API tokens")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="create an API token for a user and print it once")
    common(p)
    p.add_argument("user", help="the user the token acts for")
    p.add_argument("--scope", choices=SCOPES, required=True)
    p.add_argument(
        "--expires-days",
        type=int,
        default=None,
        help="days until it expires (default and maximum: auth.token_max_days)",
    )
    p.add_argument("--name", default="", help="what uses the token (default: cli)")
    p.add_argument("--group", action="append", default=None,
                   help="only this group's hosts (repeatable)")  # fmt: skip
    p = actions.add_parser("list", help="list tokens (of one user, or everyone's)")
    common(p)
    p.add_argument("user", nargs="?", default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("revoke", help="revoke a token (effective on its next request)")
    common(p)
    p.add_argument("id", type=int)


def _line(t: TokenItem) -> str:
    state = "revoked" if t.revoked_at is not None else f"expires {t.expires_at:%Y-%m-%d %H:%M %Z}"
    used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
    groups = ",".join(map(str, t.group_ids)) if t.restricted else "-"
    return (f"{t.id:>4}  {t.username:<20} {t.name:<20} {t.scope:<8} {t.hint}…  groups {groups}"
            f"  {state}, {used}")  # fmt: skip


async def tokens_command(args: argparse.Namespace, config: Config, db: Database) -> None:
    # Creating and revoking never signs a JWT: the sealer of the signing keys is not needed.
    tokens = Tokens(db, Sealer(secrets.token_bytes(32)), max_days=config.auth.token_max_days)
    action = args.tokens_command
    try:
        if action == "create":
            await _create(args, config, db, tokens)
        elif action == "list":
            user_id = await _user_id(db, args.user) if args.user else None
            found = await db.run(list_tokens, user_id)
            if args.json:
                print(json.dumps(api_reply(TokenList, tokens=found), indent=2))  # the API's
            else:
                for t in found:
                    print(_line(t))
        elif action == "revoke":
            admin = Principal("cli")
            item = await tokens.revoke(admin, args.id, actor=cli_actor(), everyone=True)
            print(f"revoked token {item.id} ({item.name}) of {item.username}")
    except Missing as exc:
        raise CommandError(str(exc)) from None
    except HandleError as exc:
        problems = "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
        raise CommandError(problems) from None


async def _user_id(db: Database, name: str) -> int:
    user = await db.run(get_user, name.strip())
    if user is None:
        raise CommandError(f"no user {name.strip().lower()!r}")
    return int(user.id)


async def _create(args: argparse.Namespace, config: Config, db: Database, tokens: Tokens) -> None:
    row = await db.run(load_principal, await _user_id(db, args.user))
    if row is None:
        raise CommandError(f"no user {args.user.strip().lower()!r}")
    group_ids = None
    if args.group is not None:
        known = {g.name: g.id for g in await db.run(list_groups)}
        missing = [g for g in args.group if g not in known]
        if missing:
            raise CommandError(f"no group {missing[0]!r}")
        group_ids = [known[g] for g in args.group]
    days = config.auth.token_max_days if args.expires_days is None else args.expires_days
    me = Principal.of(row, operators_see_ungrouped=config.auth.operators_see_ungrouped)
    item, secret = await tokens.create(
        me, owner=row, name=args.name.strip() or "cli", scope=args.scope, days=days,
        group_ids=group_ids, actor=cli_actor(), by="cli",
    )  # fmt: skip
    print(secret, flush=True)  # alone on stdout: TOKEN=$(patch-manager tokens create ...)
    note = (f"token {item.id} '{item.name}', {item.scope} scope, for {item.username}, "
            f"expires {item.expires_at:%Y-%m-%d}; shown once, stored only hashed")  # fmt: skip
    print(note, file=sys.stderr)
