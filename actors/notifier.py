"""The notification sender (R-9.3): turns outbox events into e-mail digests and sends them.

One supervised task (``Notifier.run``, started in the root nursery). Every cycle, when
notifications are enabled: the periodic checks add their events (hosts unreachable for long,
certificates expiring soon), the outboxes are bounded, the pending events are fanned out to the
subscribers who may see their hosts as **one digest per recipient**, and due messages are sent
over SMTP. A failed attempt is retried with exponential backoff (``backoff_delay``) and, after
``max_attempts``, marked failed; the error is the outbox's last error (Settings →
Notifications). Nothing here is awaited by an actor: events are rows inserted by whoever
noticed them.

SMTP is stdlib ``smtplib`` in a worker thread behind a limiter of one, with the configured
timeout on every socket operation; a cancelled send is abandoned (the thread ends at its own
timeout). ``MailError`` (one line, with its ``kind``: refused, timeout, auth, tls, rejected,
config) is the one error ``send_mail`` raises.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import smtplib
import ssl
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio

from ca import Sealer, SealError
from maintenance import Interval, WindowRule, occurrences
from storage import Database, StorageError, WindowRow, list_blackouts, list_windows
from storage.display import user_time_zones
from storage.notifications import (
    EventRow,
    NotificationSettings,
    Subscriber,
    drop_excess_events,
    enqueue_event,
    get_notification_settings,
    is_loopback,
    password_env_problem,
    pending_events,
    record_due_events,
    subscribers,
    visible_hosts,
    window_hosts,
)
from storage.outbox import (
    MessageRow,
    NewMessage,
    drop_excess_messages,
    due_messages,
    mark_attempt_failed,
    mark_sent,
    queue_messages,
    record_error,
)

from .rollout import NOTHING_PENDING, roll_up

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0


class MailError(Exception):
    """A message could not be handed to the SMTP server; ``kind`` says why in one word."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def backoff_delay(attempts: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S) -> float:
    """Seconds before the next try after ``attempts`` failed ones (1, 2, ...): base·2^(n-1)."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclasses.dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send. ``password`` is the clear text (unsealed or from the
    environment), never logged."""

    host: str
    port: int
    security: str  # starttls | tls | none (loopback only)
    username: str
    password: str
    from_address: str
    timeout_s: float
    ssl_context: ssl.SSLContext


def smtp_config(
    settings: NotificationSettings,
    sealer: Sealer | None,
    ssl_context: ssl.SSLContext,
    environ: Callable[[str], str | None],
) -> SmtpConfig:
    """The settings as a transport configuration; ``MailError('config', ...)`` when they cannot
    be used (no host, plain SMTP off loopback, a password that cannot be unsealed or whose
    environment variable is unset)."""
    if not settings.smtp_host or not settings.from_address:
        raise MailError("config", "no SMTP host or from-address configured")
    if settings.security == "none" and not is_loopback(settings.smtp_host):
        raise MailError("config", "security 'none' is allowed only for a loopback SMTP server")
    password = ""
    if settings.password_env:
        if problem := password_env_problem(settings.password_env):  # stored before the rule
            raise MailError("config", f"password_env {settings.password_env!r}: {problem}")
        password = environ(settings.password_env) or ""
        if not password:
            raise MailError("config", f"environment variable {settings.password_env} is not set")
    elif settings.password_sealed:
        if sealer is None:
            raise MailError("config", "no sealing key to read the stored SMTP password")
        try:
            password = sealer.unseal(settings.password_sealed)
        except SealError as exc:
            raise MailError("config", f"stored SMTP password cannot be unsealed: {exc}") from exc
    return SmtpConfig(
        settings.smtp_host, settings.smtp_port, settings.security, settings.username, password,
        settings.from_address, float(settings.timeout_s), ssl_context,
    )  # fmt: skip


def build_message(config: SmtpConfig, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="patch-manager")
    message.set_content(body)
    return message


def send_mail(config: SmtpConfig, messages: Sequence[EmailMessage]) -> None:
    """Send ``messages`` over one SMTP connection (blocking: run it in a worker thread).

    Raises ``MailError``: refused (connection refused, or a 4xx/5xx answer to the connection
    or a recipient), timeout, auth (login refused), tls (handshake or certificate), rejected
    (the server refused the message)."""
    try:
        client: smtplib.SMTP
        if config.security == "tls":
            client = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout_s, context=config.ssl_context
            )
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        with client:
            if config.security == "starttls":
                client.starttls(context=config.ssl_context)
            if config.username:
                client.login(config.username, config.password)
            for message in messages:
                client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError("auth", f"login refused ({exc.smtp_code})") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError("tls", f"server does not offer it: {exc}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(f"{to}: {code}" for to, (code, _) in exc.recipients.items())
        raise MailError("refused", f"recipient refused ({codes})") from exc
    except smtplib.SMTPConnectError as exc:
        raise MailError("refused", f"server refused the connection ({exc.smtp_code})") from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        raise MailError("rejected", f"server answered {exc.smtp_code} {text}".strip()) from exc
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):  # smtplib's reading of a silent server
            raise MailError("timeout", f"no answer within {config.timeout_s:g} s") from exc
        raise MailError("refused", f"server closed the connection: {exc}") from exc
    except ssl.SSLError as exc:
        raise MailError("tls", f"TLS failed: {exc.reason or exc}") from exc
    except TimeoutError as exc:
        raise MailError("timeout", f"no answer within {config.timeout_s:g} s") from exc
    except ConnectionRefusedError as exc:
        raise MailError("refused", "connection refused") from exc
    except smtplib.SMTPException as exc:
        raise MailError("rejected", str(exc)) from exc
    except OSError as exc:
        raise MailError("refused", exc.strerror or str(exc)) from exc


# -- digests (pure) ---------------------------------------------------------------------------

_TITLES = {
    "job_finished": "Job finished",
    "job_failed": "Job failed",
    "host_unreachable": "Host unreachable",
    "certificate_expiry": "Certificate expiring",
    "window_reminder": "Maintenance window soon",
}


def local_time(value: object, tz: str) -> str:
    """An instant of an event's details (ISO text) for a reader in ``tz``: its local time with
    the zone named and the UTC time beside it ("2026-11-30 18:15 Asia/Kolkata (12:45 UTC)"),
    or "… UTC" once for a reader in UTC. Text that is not an instant is shown as it is."""
    try:
        at = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    at = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone, tz = ZoneInfo("UTC"), "UTC"
    local = at.astimezone(zone)
    if local.utcoffset() == dt.timedelta(0) and tz in ("UTC", "Etc/UTC"):
        return f"{at:%Y-%m-%d %H:%M} UTC"
    utc = f"{at:%H:%M}" if at.date() == local.date() else f"{at:%Y-%m-%d %H:%M}"
    return f"{local:%Y-%m-%d %H:%M} {tz} ({utc} UTC)"


def describe(event: EventRow, visible: set[int], tz: str = "UTC") -> str:
    """One event as a few lines, naming only the hosts in ``visible``, its times in the
    recipient's time zone ``tz``. Details that cannot be read (a row written by hand, an older
    shape) give one line saying so, never an error: one bad event must not hold back the others."""
    try:
        return _describe(event, visible, tz)
    except (AttributeError, KeyError, TypeError, ValueError):
        return f"Event #{event.id} ({event.kind}): its details cannot be read"


def _describe(event: EventRow, visible: set[int], tz: str) -> str:
    d = event.details
    if event.kind in ("job_finished", "job_failed"):
        hosts = [h for h in d.get("hosts", []) if h.get("id") in visible]
        failed = [h for h in hosts if h.get("state") == "failed"]
        lines = [f"Job #{d.get('job_id')} {d.get('status')} ({len(hosts)} host(s))"]
        if failed:
            lines.append("  failed hosts:")
            lines += [f"    {h['name']}: {h.get('error') or 'failed'}" for h in failed]
        return "\n".join(lines)
    if event.kind == "host_unreachable":
        since = local_time(d.get("since"), tz)
        return f"Host {d.get('host')} unreachable since {since}: {d.get('reason', '')}"
    if event.kind == "certificate_expiry":
        owner = f" (host {d['host']})" if d.get("host") else ""
        return f"Certificate {d.get('subject')}{owner} expires {local_time(d.get('not_after'), tz)}"
    if event.kind == "window_reminder":
        starts = local_time(d.get("starts_at"), tz)
        return f"Window {d.get('name')} ({d.get('target')}) starts {starts}"
    return str(d.get("text", event.kind))


def as_seen(event: EventRow, visible: set[int], all_hosts: bool) -> EventRow:
    """``event`` as a subscriber who sees ``visible`` of its hosts hears of it: a job that also
    reached other hosts is judged over theirs only (a failure elsewhere is neither told nor
    makes it a ``job_failed``)."""
    if all_hosts or event.kind not in ("job_finished", "job_failed"):
        return event
    if set(event.host_ids) <= visible:
        return event
    try:
        seen = [h for h in event.details["hosts"] if h["id"] in visible]
        states = [h["state"] for h in seen]
    except (KeyError, TypeError):
        return event  # unreadable: ``describe`` says so
    # The job's own rule over these rows (rows with nothing to do count neither way).
    nothing = sum(1 for h in seen if h.get("code") == NOTHING_PENDING)
    status = roll_up(states, stopped=False, nothing=nothing) or "failed"
    kind = "job_failed" if status in ("failed", "partially_failed") else "job_finished"
    return dataclasses.replace(event, kind=kind, details=event.details | {"status": status})


def visible_to(event: EventRow, subscriber_hosts: set[int], all_hosts: bool) -> bool:
    """Whether the subscriber hears of ``event``: one of its hosts is in their scope; an event
    about no host (the web server's certificate) only when they see everything."""
    if not event.host_ids:
        return all_hosts
    return bool(subscriber_hosts)


def digest(subscriber: Subscriber, items: Sequence[tuple[EventRow, str]]) -> NewMessage:
    """One message for all of ``items`` (an event and its text) that fired at once."""
    if len(items) == 1:
        event, text = items[0]
        subject = f"[patch-manager] {_TITLES.get(event.kind, event.kind)}"
        first = text.splitlines()[0] if text else ""
        if first:
            subject += f": {first}"[:120]
    else:
        subject = f"[patch-manager] {len(items)} notifications"
    body = "\n\n".join(text for _, text in items)
    body += "\n\n-- \nLinux Patch Manager; change your subscriptions on your profile page.\n"
    return NewMessage(subscriber.email, subject[:200], body, len(items))


@dataclasses.dataclass(frozen=True)
class Reminder:
    dedupe_key: str
    host_ids: tuple[int, ...]
    details: dict[str, Any]


def window_reminders(
    windows: Sequence[WindowRow],
    hosts_of: dict[int, list[int]],
    now: dt.datetime,
    lead: dt.timedelta,
    blackouts: Sequence[Interval] = (),
) -> list[Reminder]:
    """A reminder for each occurrence of an enabled window that opens within ``lead`` from
    ``now`` (one per opening: the dedupe key names the window and its start), with the
    ``blackouts`` cut out as the coordinator cuts them: an occurrence blacked out entirely is
    not told; one whose start is blacked out is told with the time it really opens."""
    found = []
    for window in windows:
        if not window.enabled:
            continue
        rule = WindowRule.from_columns(window)
        # (pieces that open by now + lead; a blackout may move an opening to exactly then)
        starts: list[Interval] = occurrences(rule, now, now + lead + rule.duration, blackouts)
        for piece in starts:
            if not now < piece.start <= now + lead:
                continue  # already open: no reminder
            found.append(Reminder(
                f"window:{window.id}:{piece.start.isoformat()}",
                tuple(hosts_of.get(window.id, ())),
                {"name": window.name, "target": window.target,
                 "starts_at": piece.start.isoformat(), "ends_at": piece.end.isoformat()},
            ))  # fmt: skip
    return found


# -- the sender -------------------------------------------------------------------------------


@dataclasses.dataclass
class NotifierStats:
    cycles: int = 0
    sent: int = 0
    failed_attempts: int = 0
    crashes: int = 0  # cycles ended by an unexpected error (logged with its traceback)


class Notifier:
    """The sender task. ``wake()`` starts a cycle at once (a new event, the settings saved);
    otherwise one runs every ``every_s`` seconds of ``trio.current_time()``."""

    def __init__(
        self,
        db: Database,
        *,
        sealer: Sealer | None,
        ssl_context: ssl.SSLContext,
        see_ungrouped: bool = False,
        every_s: float = 30.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        environ: Callable[[str], str | None] | None = None,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.ssl_context = ssl_context
        self.see_ungrouped = see_ungrouped
        self.every_s = every_s
        self.clock = clock
        self.environ = environ or os.environ.get
        self.limiter = trio.CapacityLimiter(1)
        self.stats = NotifierStats()
        self._wake = trio.Event()
        self.cycled = trio.Event()  # set after each cycle of ``run`` (then replaced)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run cycles until cancelled. A database outage skips the cycle (logged); a send
        failure is the message's, recorded in the outbox. Any other error of a cycle is logged
        with its traceback and the next cycle runs as usual: notifications must never take
        the server down (cancellation is never caught)."""
        task_status.started()
        while True:
            # A fresh event BEFORE the cycle: a wake during the cycle (settings saved, a new
            # event) starts the next one at once instead of being lost.
            self._wake = trio.Event()
            try:
                await self.cycle()
            except StorageError as exc:
                log.warning("notifications: cycle skipped, database unavailable: %s", exc)
            except Exception:
                self.stats.crashes += 1
                log.exception("notifications: cycle failed; the next one runs in %gs",
                              self.every_s)  # fmt: skip
            done, self.cycled = self.cycled, trio.Event()
            done.set()
            with trio.move_on_after(self.every_s):
                await self._wake.wait()

    async def cycle(self) -> int:
        """One round (see the module docstring); returns the messages sent."""
        self.stats.cycles += 1
        settings = await self.db.run(get_notification_settings)
        if not settings.enabled:
            return 0
        now = self.clock()
        await self.db.run(record_due_events, settings, now)
        await self.remind(settings, now)
        await self.db.run(drop_excess_events, settings.max_events)
        await self.db.run(drop_excess_messages, settings.max_messages)
        await self.dispatch(now)
        return await self.send_due(settings, now)

    async def remind(self, settings: NotificationSettings, now: dt.datetime) -> int:
        """Enqueue the reminders of windows starting within ``reminder_minutes``."""

        def add(conn: Any) -> int:
            blackouts = [Interval(b.starts_at, b.ends_at) for b in list_blackouts(conn)]
            reminders = window_reminders(
                list_windows(conn), window_hosts(conn), now,
                dt.timedelta(minutes=settings.reminder_minutes), blackouts,
            )  # fmt: skip
            added = 0
            with conn.transaction():
                for r in reminders:
                    added += enqueue_event(conn, "window_reminder", r.host_ids, r.details,
                                           r.dedupe_key)  # fmt: skip
            return added

        return int(await self.db.run(add))

    async def dispatch(self, now: dt.datetime) -> int:
        """Fan the pending events out as one digest per subscriber, due from ``now`` (the
        cycle's time, so the same cycle sends them); returns the messages."""

        def fan_out(conn: Any) -> tuple[list[NewMessage], list[int]]:
            events = pending_events(conn)
            if not events:
                return [], []
            all_ids = sorted({h for e in events for h in e.host_ids})
            messages = []
            zones = user_time_zones(conn)
            for subscriber in subscribers(conn, see_ungrouped=self.see_ungrouped):
                tz = zones.get(subscriber.user_id, "UTC")
                seen = visible_hosts(conn, subscriber.scope, all_ids)
                items = []
                everything = subscriber.scope.all_hosts
                for event in events:
                    mine = seen.intersection(event.host_ids)
                    if not visible_to(event, mine, everything):
                        continue
                    heard = as_seen(event, mine, everything)
                    if heard.kind in subscriber.events:
                        items.append((heard, describe(heard, mine, tz)))
                if items:
                    messages.append(digest(subscriber, items))
            return messages, [e.id for e in events]

        messages, event_ids = await self.db.run(fan_out)
        if event_ids:
            await self.db.run(queue_messages, messages, event_ids, now)
        return len(messages)

    async def send_due(self, settings: NotificationSettings, now: dt.datetime) -> int:
        due: list[MessageRow] = await self.db.run(due_messages, now)
        if not due:
            return 0
        try:
            config = smtp_config(settings, self.sealer, self.ssl_context, self.environ)
        except MailError as exc:
            await self.db.run(record_error, str(exc))
            log.warning("notifications: %s", exc)
            return 0
        sent = 0
        for row in due:  # one connection per message: one refused recipient fails only its own
            message = build_message(config, row.recipient, row.subject, row.body)
            try:
                await self._send(config, [message])
            except MailError as exc:
                self.stats.failed_attempts += 1
                attempts = row.attempts + 1
                retry_at = (
                    now + dt.timedelta(seconds=backoff_delay(attempts))
                    if attempts < MAX_ATTEMPTS
                    else None
                )
                log.warning("notifications: message %d to %s: %s%s", row.id, row.recipient,
                            exc, "" if retry_at else " (giving up)")  # fmt: skip
                await self.db.run(mark_attempt_failed, [row.id], str(exc), retry_at)
                if exc.kind in ("refused", "timeout", "tls", "config"):
                    break  # the server is the problem: the rest waits for the next cycle
                continue
            await self.db.run(mark_sent, [row.id])
            self.stats.sent += 1
            sent += 1
        return sent

    async def _send(self, config: SmtpConfig, messages: list[EmailMessage]) -> None:
        await trio.to_thread.run_sync(
            send_mail, config, messages, limiter=self.limiter, abandon_on_cancel=True
        )

    async def send_test(self, to: str) -> tuple[bool, str]:
        """Send a test message to ``to`` now with the stored settings (even when notifications
        are off); returns (ok, one-line result). Records a failure as the last error."""
        settings = await self.db.run(get_notification_settings)
        try:
            config = smtp_config(settings, self.sealer, self.ssl_context, self.environ)
            message = build_message(
                config, to, "[patch-manager] test message",
                "This is a test message from Linux Patch Manager.\n",
            )  # fmt: skip
            await self._send(config, [message])
        except MailError as exc:
            await self.db.run(record_error, str(exc))
            return False, str(exc)
        return True, f"sent to {to} through {config.host}:{config.port}"
