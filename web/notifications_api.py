"""The JSON API of notifications and the run-time log level (R-9.3, R-9.4).

- ``GET/PUT /api/v1/admin/notifications`` (admins): SMTP and notification settings (a PUT
  changes only the fields it sends; ``password_env`` must name a ``PM_SMTP_`` variable); the
  password is write-only (``password``: a new one to seal, "" to remove it).
- ``POST /api/v1/admin/notifications/test`` (admins): send a test message now; the answer
  says whether it went and why not (refused, timeout, auth, tls, config ...).
- ``GET /api/v1/admin/notifications/outbox`` (admins): depth, last error, recent messages.
- ``GET/PUT /api/v1/profile/notifications``: the caller's own e-mail address and events.
- ``PUT /api/v1/admin/log-level`` (admins): the process's log level, now.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .models import Body, Reply
from .models_io import body, reply
from .services import notifications as svc
from .services import principal

Security = Literal["starttls", "tls", "none"]
EventKind = Literal[
    "job_finished", "job_failed", "host_unreachable", "certificate_expiry", "window_reminder"
]
LogLevel = Literal["debug", "info", "warning", "error"]


class NotificationSettingsIn(Body):
    enabled: bool = False
    smtp_host: str = Field("", max_length=253)
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Security = "starttls"
    username: str = Field("", max_length=200)
    password: str | None = Field(None, max_length=500, description="write-only; '' removes it")
    password_env: str = Field(
        "",
        max_length=64,
        description="or: the variable holding it (PM_SMTP_..., e.g. PM_SMTP_PASSWORD)",
    )
    from_address: str = Field("", max_length=254)
    timeout_s: int = Field(20, ge=1, le=300)
    unreachable_minutes: int = Field(30, ge=1, le=10080)
    certificate_days: int = Field(14, ge=1, le=365)
    reminder_minutes: int = Field(60, ge=1, le=10080)


class NotificationSettingsOut(Reply):
    enabled: bool
    smtp_host: str
    smtp_port: int
    security: Security
    username: str
    password_stored: bool
    password_env: str
    from_address: str
    timeout_s: int
    unreachable_minutes: int
    certificate_days: int
    reminder_minutes: int
    max_events: int
    max_messages: int


class TestMessage(Body):
    to: str = Field(min_length=3, max_length=254)


class TestResult(Reply):
    ok: bool
    result: str


class OutboxMessage(Reply):
    id: int
    recipient: str
    subject: str
    events: int
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


class Outbox(Reply):
    pending_events: int
    pending_messages: int
    sent: int
    failed: int
    dropped_events: int
    dropped_messages: int
    last_error: str
    last_error_at: dt.datetime | None
    recent: list[OutboxMessage]


class SubscriptionIn(Body):
    email: str = Field("", max_length=254, description="'' for no e-mail")
    events: list[EventKind] = Field(default_factory=list, max_length=5)


class SubscriptionOut(Reply):
    email: str
    events: list[EventKind]


class LogLevelIn(Body):
    level: LogLevel


class LogLevelOut(Reply):
    level: LogLevel


def _sender(request: Request) -> Any:
    return getattr(request.app.state, "notifier", None)


class NotificationsApi:
    def __init__(self, db: Any) -> None:
        self.db = db

    async def get_settings(self, request: Request) -> Response:
        values = await svc.get_settings(self.db, principal(request))
        return reply(NotificationSettingsOut, **values)

    async def put_settings(self, request: Request) -> Response:
        data = await body(request, NotificationSettingsIn)
        # Only the fields sent: a partial PUT keeps every other setting as stored.
        changes = data.model_dump(exclude={"password"}, exclude_unset=True)
        values = await svc.save_settings(
            self.db, principal(request), _sender(request), changes, data.password
        )
        return reply(NotificationSettingsOut, **values)

    async def test(self, request: Request) -> Response:
        data = await body(request, TestMessage)
        ok, result = await svc.send_test(self.db, principal(request), _sender(request), data.to)
        return reply(TestResult, ok=ok, result=result)

    async def outbox(self, request: Request) -> Response:
        stats, recent = await svc.outbox(self.db, principal(request))
        messages = [
            OutboxMessage.model_construct(**{k: v for k, v in vars(m).items() if k != "body"})
            for m in recent
        ]
        return reply(Outbox, **vars(stats), recent=messages)

    async def get_subscription(self, request: Request) -> Response:
        found = await svc.own_subscription(self.db, principal(request))
        return reply(SubscriptionOut, email=found.email, events=list(found.events))

    async def put_subscription(self, request: Request) -> Response:
        data = await body(request, SubscriptionIn)
        saved = await svc.subscribe(self.db, principal(request), data.email, data.events)
        return reply(SubscriptionOut, email=saved.email, events=list(saved.events))

    async def log_level(self, request: Request) -> Response:
        data = await body(request, LogLevelIn)
        level = await svc.set_log_level(self.db, principal(request), data.level)
        return reply(LogLevelOut, level=level)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/admin/notifications", self.get_settings, methods=["GET"]),
            Route("/api/v1/admin/notifications", self.put_settings, methods=["PUT"]),
            Route("/api/v1/admin/notifications/test", self.test, methods=["POST"]),
            Route("/api/v1/admin/notifications/outbox", self.outbox, methods=["GET"]),
            Route("/api/v1/profile/notifications", self.get_subscription, methods=["GET"]),
            Route("/api/v1/profile/notifications", self.put_subscription, methods=["PUT"]),
            Route("/api/v1/admin/log-level", self.log_level, methods=["PUT"]),
        ]
