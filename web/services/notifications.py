"""Notification settings (admins), the test message, the outbox's state, each user's own
subscription, and the run-time log level (R-9.3, R-9.4). Every change is audited in the same
transaction as the change; the SMTP password is never returned nor audited, only whether one
is stored."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from ca import Sealer
from storage import Database
from storage.notifications import (
    EVENT_KINDS,
    NotificationSettings,
    Subscription,
    address_problem,
    get_notification_settings,
    get_subscription,
    is_loopback,
    password_env_problem,
    save_notification_settings,
    save_subscription,
)
from storage.outbox import MessageRow, OutboxStats, outbox_stats, recent_messages

from .. import audit
from ..authz import Action, Principal, require
from ..handle import InvalidInput

LOG_LEVELS = ("debug", "info", "warning", "error")


class Sender(Protocol):
    """What the running sender offers the web layer (``actors.notifier.Notifier``)."""

    sealer: Sealer | None

    def wake(self) -> None: ...

    def send_test(self, to: str) -> Awaitable[tuple[bool, str]]: ...


def _public(settings: NotificationSettings) -> dict[str, Any]:
    values = {k: v for k, v in vars(settings).items() if k != "password_sealed"}
    return values | {"password_stored": bool(settings.password_sealed)}


async def get_settings(db: Database, who: Principal) -> dict[str, Any]:
    require(who, Action.MANAGE_SETTINGS)
    return _public(await db.run(get_notification_settings))


async def save_settings(
    db: Database,
    who: Principal,
    sender: Sender | None,
    changes: dict[str, Any],
    password: str | None,
) -> dict[str, Any]:
    """Apply ``changes`` (validated fields of ``NotificationSettings``); ``password``: a new SMTP
    password to seal ("" removes it, None keeps it). Raises ``InvalidInput``."""
    require(who, Action.MANAGE_SETTINGS)
    old = await db.run(get_notification_settings)
    new = replace(old, **changes)
    problems: dict[str, str] = {}
    if new.from_address and (problem := address_problem(new.from_address)):
        problems["from_address"] = problem
    if new.password_env and (problem := password_env_problem(new.password_env)):
        problems["password_env"] = problem
    if new.security == "none" and new.smtp_host and not is_loopback(new.smtp_host):
        problems["security"] = "'none' (no TLS) is allowed only for a loopback SMTP server"
    if new.enabled and (not new.smtp_host or not new.from_address):
        problems["enabled"] = "set the SMTP host and from-address first"
    if password:
        if sender is None or sender.sealer is None:
            problems["password"] = "no sealing key to store a password; use password_env"
        else:
            new = replace(new, password_sealed=sender.sealer.seal(password))
    elif password == "":
        new = replace(new, password_sealed="")
    if problems:
        raise InvalidInput.of(problems)
    entry = audit.entry(
        who, "settings.notifications", "settings:notifications",
        before=_public(old), after=_public(new),
    )  # fmt: skip
    await audit.audited(db, entry, save_notification_settings, new)
    if sender is not None:
        sender.wake()
    return _public(new)


async def send_test(
    db: Database, who: Principal, sender: Sender | None, to: str
) -> tuple[bool, str]:
    """Send a test message now; (ok, one-line result: refused, timeout, auth, tls ...)."""
    require(who, Action.MANAGE_SETTINGS)
    if problem := address_problem(to):
        raise InvalidInput("to", problem)
    if sender is None:
        return False, "the notification sender is not running"
    ok, result = await sender.send_test(to)
    await audit.record(
        db, audit.entry(who, "settings.notifications.test", f"email:{to}",
                        outcome="ok" if ok else "failed", detail=result),
    )  # fmt: skip
    return ok, result


async def outbox(db: Database, who: Principal) -> tuple[OutboxStats, list[MessageRow]]:
    require(who, Action.MANAGE_SETTINGS)
    return await db.run(outbox_stats), await db.run(recent_messages)


async def own_subscription(db: Database, who: Principal) -> Subscription:
    found = await db.run(get_subscription, who.user_id)
    return found or Subscription(who.user_id, "", ())


async def subscribe(
    db: Database, who: Principal, email: str, events: Sequence[str]
) -> Subscription:
    """Set the caller's own address and events ("" address: no e-mail at all)."""
    problems = {}
    if email and (problem := address_problem(email)):
        problems["email"] = problem
    unknown = sorted(set(events) - set(EVENT_KINDS))
    if unknown:
        problems["events"] = f"unknown event(s): {', '.join(unknown)}"
    if problems:
        raise InvalidInput.of(problems)
    if not who.user_id:
        raise InvalidInput("email", "only a user can subscribe")
    wanted = tuple(e for e in EVENT_KINDS if e in events)
    old = await own_subscription(db, who)
    entry = audit.entry(
        who, "notifications.subscribe", f"user:{who.username}",
        before={"email": old.email, "events": list(old.events)},
        after={"email": email, "events": list(wanted)},
    )  # fmt: skip
    await audit.audited(db, entry, save_subscription, who.user_id, email, wanted)
    return Subscription(who.user_id, email, wanted if email else ())


async def set_log_level(db: Database, who: Principal, level: str) -> str:
    """Set the process's log level now (until the next reload that changes logging.level)."""
    require(who, Action.MANAGE_SETTINGS)
    if level not in LOG_LEVELS:
        raise InvalidInput("level", f"one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    old = logging.getLevelName(root.getEffectiveLevel()).lower()
    await audit.record(db, audit.entry(who, "settings.log_level", "logging:level",
                                       before={"level": old}, after={"level": level}))  # fmt: skip
    root.setLevel(level.upper())
    return level
