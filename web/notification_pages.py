"""The Notifications page (R-9.3): every user's own e-mail address and events; for admins
also the SMTP settings, the "send test message" button and the outbox (depth, last error,
recent messages). The same service functions as the API (``services.notifications``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage.outbox import MessageRow, OutboxStats

from .authz import Action, may, require
from .forms import fields
from .handle import HandleError
from .notifications_api import NotificationSettingsIn
from .pages import Base, Pages
from .services import notifications as svc
from .services import principal

EVENT_LABELS = {
    "job_failed": "A job failed (with its failed hosts)",
    "job_finished": "A job finished",
    "host_unreachable": "A host unreachable for longer than the configured minutes",
    "certificate_expiry": "A certificate expires soon",
    "window_reminder": "A maintenance window starts soon",
}
SETTING_FIELDS = (
    "smtp_host", "smtp_port", "security", "username", "password_env", "from_address",
    "timeout_s", "unreachable_minutes", "certificate_days", "reminder_minutes",
)  # fmt: skip


@dataclass(frozen=True)
class NotificationsPage(Base):
    email: str = ""
    events: tuple[str, ...] = ()
    event_labels: dict[str, str] = field(default_factory=dict)
    admin: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    outbox: OutboxStats | None = None
    recent: list[MessageRow] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    test_result: str = ""
    test_ok: bool = False


def _sender(request: Request) -> Any:
    return getattr(request.app.state, "notifier", None)


class NotificationPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.db = pages.db

    async def page(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        status: int = 200,
        form: dict[str, Any] | None = None,
        test: tuple[bool, str] | None = None,
    ) -> Response:
        who = principal(request)
        mine = await svc.own_subscription(self.db, who)
        admin = may(who, Action.MANAGE_SETTINGS)
        settings: dict[str, Any] = {}
        outbox: OutboxStats | None = None
        recent: list[MessageRow] = []
        if admin:
            settings = await svc.get_settings(self.db, who)
            outbox, recent = await svc.outbox(self.db, who)
        if form:
            settings |= form
        page = NotificationsPage(
            **self.p.base(request, "Notifications", "notifications"),
            email=mine.email, events=mine.events, event_labels=EVENT_LABELS, admin=admin,
            settings=settings, outbox=outbox, recent=recent, errors=errors or {},
            test_ok=bool(test and test[0]), test_result=test[1] if test else "",
        )  # fmt: skip
        return self.p.render(request, "notifications.html", page, status)

    async def subscribe(self, request: Request) -> Response:
        form = await request.form()
        email = str(form.get("email", "")).strip()
        events = [str(e) for e in form.getlist("events")]
        try:
            await svc.subscribe(self.db, principal(request), email, events)
        except HandleError as exc:
            return await self.page(request, exc.fields, exc.status)
        notice = "Subscriptions saved" if email else "You receive no e-mail notifications"
        return self.p.back("/notifications", notice)

    async def save_settings(self, request: Request) -> Response:
        require(principal(request), Action.MANAGE_SETTINGS)
        form = fields(await request.form())
        values: dict[str, Any] = {k: form[k] for k in SETTING_FIELDS if k in form}
        values["enabled"] = form.get("enabled") == "on"
        password = form.get("password", "")
        if form.get("remove_password") == "on":
            values["password"] = ""
        elif password:
            values["password"] = password
        try:
            data = NotificationSettingsIn.model_validate(values)
        except ValidationError as exc:
            errors = {str(e["loc"][0]): str(e["msg"]) for e in exc.errors() if e["loc"]}
            shown = {k: v for k, v in values.items() if k != "password"}
            return await self.page(request, errors, 422, shown)
        try:
            await svc.save_settings(
                self.db, principal(request), _sender(request),
                data.model_dump(exclude={"password"}), data.password,
            )  # fmt: skip
        except HandleError as exc:
            shown = {k: v for k, v in values.items() if k != "password"}
            return await self.page(request, exc.fields, exc.status, shown)
        return self.p.back("/notifications", "Notification settings saved")

    async def test(self, request: Request) -> Response:
        require(principal(request), Action.MANAGE_SETTINGS)
        form = fields(await request.form())
        try:
            ok, result = await svc.send_test(
                self.db, principal(request), _sender(request), form.get("to", "").strip()
            )
        except HandleError as exc:
            return await self.page(request, {"to": exc.message}, exc.status)
        return await self.page(request, test=(ok, result))

    def routes(self) -> list[Route]:
        return [
            Route("/notifications", self.page, methods=["GET"]),
            Route("/notifications/subscription", self.subscribe, methods=["POST"]),
            Route("/notifications/settings", self.save_settings, methods=["POST"]),
            Route("/notifications/test", self.test, methods=["POST"]),
        ]
