"""`patch-manager users …`: accounts from the command line, on the database directly.

The rules are the storage layer's, the same the web UI meets: user names unique regardless of
case, the last active admin neither disabled nor demoted, a change of role, groups, state or
password ends the user's sessions at once (a running server reads sessions from the same
database). New and reset passwords are one-time passwords, to be changed at the next login.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from storage import (
    ROLES,
    AuditEntry,
    Conflict,
    Database,
    NotFound,
    UserItem,
    create_user,
    get_user,
    list_groups,
    list_users,
    set_password,
    unlock_user,
    update_user,
)
from storage import run_audited as audited
from storage.mfa import reset_factors
from storage.principals import notify_scope_changed
from storage.tokens import revoke_user_tokens
from web import Auth, generate_password
from web.models import Users

from .audit_cli import cli_actor
from .hosts_cli import CommandError, api_reply

BY = "cli"


def add_parsers(sub: Any, common: Any) -> None:
    users = sub.add_parser("users", help="add, list and change user accounts")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="create a user with a one-time password")
    common(p)
    p.add_argument("name", help="user name (letters, digits, '.', '_', '-')")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--group", action="append", default=[], help="group name (repeatable)")
    p = actions.add_parser("list", help="list users with role, groups and state")
    common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("set-role", help="change a user's role (their sessions end)")
    common(p)
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    p = actions.add_parser("set-groups", help="replace a user's groups (their sessions end)")
    common(p)
    p.add_argument("name")
    p.add_argument("groups", nargs="*", help="group names (none: no group)")
    for action, text in (
        ("disable", "disable a user (their sessions end)"),
        ("enable", "enable a disabled user"),
        ("unlock", "unlock a user locked after wrong passwords"),
        ("reset-password", "set a one-time password (their sessions end)"),
        ("reset-mfa", "remove a user's second factors (sessions end; enrol again at next login)"),
    ):
        p = actions.add_parser(action, help=text)
        common(p)
        p.add_argument("name")


def _entry(action: str, name: str, **kw: Any) -> AuditEntry:
    """The audit entry of a command-line change (actor ``cli:USER@HOST``)."""
    return AuditEntry(cli_actor(), action, f"user:{name.strip().lower()}", **kw)


async def _user_id(db: Database, name: str) -> int:
    user = await db.run(get_user, name.strip())
    if user is None:
        raise CommandError(f"no user {name.strip().lower()!r}")
    return user.id


async def _group_ids(db: Database, names: list[str]) -> tuple[int, ...]:
    known = {g.name: g.id for g in await db.run(list_groups)}
    missing = [n for n in names if n not in known]
    if missing:
        raise CommandError(f"no group {missing[0]!r} (create it first: Groups page or API)")
    return tuple(known[n] for n in names)


def _line(u: UserItem) -> str:
    state = u.state
    if u.locked_until is not None:
        state += f", locked until {u.locked_until:%Y-%m-%d %H:%M %Z}"
    if u.must_change_password:
        state += ", must change password"
    return f"{u.id:>4}  {u.username:<24} {u.role:<9} {','.join(u.groups) or '-':<24} {state}"


async def users_command(args: argparse.Namespace, db: Database) -> None:
    action = args.users_command
    try:
        await _run(action, args, db)
    except Conflict as exc:
        raise CommandError(str(exc)) from None
    except NotFound as exc:
        raise CommandError(str(exc)) from None


async def _run(action: str, args: argparse.Namespace, db: Database) -> None:
    auth = Auth(db)
    if action == "list":
        users = await db.run(list_users)
        if args.json:
            print(json.dumps(api_reply(Users, users=users), indent=2))  # GET /api/v1/users
        else:
            for u in users:
                print(_line(u))
        return
    if action == "add":
        groups = await _group_ids(db, args.group)
        password = generate_password()
        hashed = await auth.hash_password(password)
        user = await audited(
            db,
            _entry("user.create", args.name, after={"role": args.role, "groups": args.group}),
            lambda c: create_user(
                c,
                args.name.strip(),
                hashed,
                args.role,
                must_change_password=True,
                group_ids=groups,
                created_by=BY,
            ),
        )
        print(f"created {user.role} {user.username} (id {user.id})")
        print(f"one-time password: {password}")
        print("(to be changed at the first login)")
        return
    user_id = await _user_id(db, args.name)
    name = args.name.strip().lower()
    if action == "set-role":
        ended = await audited(
            db, _entry("user.update", name, after={"role": args.role}),
            lambda c: update_user(c, user_id, by=BY, role=args.role),
        )  # fmt: skip
        print(f"{name} is now {args.role}; {ended} session(s) ended")
    elif action == "set-groups":
        groups = await _group_ids(db, args.groups)
        ended = await audited(
            db, _entry("user.update", name, after={"groups": args.groups}),
            lambda c: update_user(c, user_id, by=BY, group_ids=groups),
        )  # fmt: skip
        print(f"{name} groups: {', '.join(args.groups) or 'none'}; {ended} session(s) ended")
    elif action in ("disable", "enable"):
        state = "disabled" if action == "disable" else "active"
        ended = await audited(
            db, _entry("user.update", name, after={"state": state}),
            lambda c: update_user(c, user_id, by=BY, state=state),
        )  # fmt: skip
        print(f"{name} is {state}; {ended} session(s) ended")
    elif action == "unlock":
        await audited(db, _entry("user.unlock", name), lambda c: unlock_user(c, user_id, by=BY))
        print(f"{name} unlocked")
    elif action == "reset-password":
        password = generate_password()
        hashed = await auth.hash_password(password)

        def reset_password(conn: Any) -> int:  # as the web's: every API token goes with it
            set_password(conn, name, hashed, must_change=True, by=BY)
            return revoke_user_tokens(conn, user_id, by=BY)

        revoked = await audited(
            db, lambda n: _entry("user.password.reset", name, after={"tokens_revoked": n}),
            reset_password,
        )  # fmt: skip
        print(f"one-time password for {name}: {password}")
        print(f"(every session of this user has ended, {revoked} API token(s) revoked;"
              " to be changed at the next login)")  # fmt: skip
    elif action == "reset-mfa":

        def reset_mfa(conn: Any) -> tuple[int, int]:  # as the web's: API tokens too
            return reset_factors(conn, user_id, by=BY), revoke_user_tokens(conn, user_id, by=BY)

        ended, revoked = await audited(
            db, lambda done: _entry("user.mfa.reset", name, after={"tokens_revoked": done[1]}),
            reset_mfa,
        )  # fmt: skip
        print(f"second factors of {name} removed; {ended} session(s) ended,"
              f" {revoked} API token(s) revoked")  # fmt: skip
        print("(the next login sets up a new one)")
    else:
        raise CommandError(f"unknown users action {action}")
    # A running server's open relay sockets of this user re-check their session and scope now.
    await db.run(notify_scope_changed)
