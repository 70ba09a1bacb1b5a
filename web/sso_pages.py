"""Single sign-on pages: the sign-in redirect and callback (public: no session yet), and
Settings → Single sign-on (admins): the provider, the claim mappings, a configuration test and
the explicit links of SSO identities to accounts.

The callback answers with a short page that moves on by itself (``meta refresh``) instead of a
redirect: the browser arrives from the provider's site, and a redirect in that chain would not
carry the SameSite=Strict session cookie to the first page.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ca import Sealer
from storage import SessionItem, StorageError, UserItem
from storage.sso import SsoConfig, SsoIdentity, SsoMapping

from .auth import SESSION_COOKIE, safe_next
from .forms import fields
from .handle import HandleError, InvalidInput
from .models import MAX_ID
from .pages import Base, Pages
from .services import groups as group_service
from .services import principal, users
from .services import sso as service
from .sso import CLIENT_SECRET_ENV, Check, OidcClient, SsoError

log = logging.getLogger(__name__)

BROWSER_COOKIE = "pm_sso"
MAX_FIELD = 2048


@dataclass(frozen=True)
class SsoSettingsPage(Base):
    config: SsoConfig = field(default_factory=SsoConfig)
    mappings: list[SsoMapping] = field(default_factory=list)
    identities: list[SsoIdentity] = field(default_factory=list)
    users: list[UserItem] = field(default_factory=list)
    groups: list[Any] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    redirect_uri: str = ""
    secret_from_env: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    sessions: list[SessionItem] = field(default_factory=list)


def _form_id(values: dict[str, str], name: str) -> int:
    text = str(values.get(name, ""))
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise InvalidInput(name, "choose one from the list")
    return int(text)


class SsoPages:
    def __init__(self, pages: Pages, client: OidcClient, sealer: Sealer | None) -> None:
        self.p = pages
        self.sys = pages.sys
        self.auth = pages.auth
        self.client = client
        self.sealer = sealer

    # -- signing in ----------------------------------------------------------------------------

    def _browser_cookie(self, value: str, max_age: int) -> str:
        # Lax, not Strict: it must come back with the provider's (cross-site) redirect.
        parts = [
            f"{BROWSER_COOKIE}={value}",
            "Path=/sso",
            "HttpOnly",
            "SameSite=Lax",
            f"Max-Age={max_age}",
        ]
        if self.auth.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    def _message(self, request: Request, title: str, message: str, status: int) -> Response:
        context = {"title": title, "message": message, "next": ""}
        response = self.p.templates.TemplateResponse(
            request, "sso_message.html", context, status_code=status
        )
        response.headers.append("set-cookie", self._browser_cookie("", 0))
        response.headers["cache-control"] = "no-store"
        return response

    def _unavailable(self, request: Request) -> Response:
        message = "the database is not reachable; try again soon"
        return self._message(request, "Sign-in failed", message, 503)

    def _redirect_uri(self, request: Request) -> str:
        """Our callback's URL: under the configured public origin (``auth.webauthn_origin``)
        when set, else under the host the browser addressed (the Host header)."""
        origin = self.auth.settings.webauthn_origin.strip().rstrip("/")
        return f"{origin}/sso/callback" if origin else str(request.url_for("sso_callback"))

    async def start(self, request: Request) -> Response:
        redirect_uri = self._redirect_uri(request)
        next_path = safe_next(request.query_params.get("next"))[:MAX_FIELD]
        if any(c.isspace() or not c.isprintable() for c in next_path):
            next_path = "/"  # a URL parser drops tabs and newlines: "/\t/x" would become "//x"
        try:
            started = await service.begin(self.sys, self.client, redirect_uri, next_path)
        except SsoError as exc:
            if exc.status == 404:  # not enabled (any more): the login page has no button then
                return RedirectResponse("/login", status_code=303)
            log.warning("sso: sign-in not started: %s", exc)
            return self._message(request, "Single sign-on unavailable", str(exc), exc.status)
        except StorageError:
            return self._unavailable(request)
        response = RedirectResponse(started.location, status_code=303)
        response.headers.append("set-cookie", self._browser_cookie(started.browser_token, 600))
        response.headers["cache-control"] = "no-store"
        return response

    async def callback(self, request: Request) -> Response:
        params = {k: v[:MAX_FIELD] for k, v in request.query_params.items()}
        token = request.cookies.get(BROWSER_COOKIE, "")
        try:
            done = await service.complete(self.sys, self.client, self.sealer, token, params)
        except SsoError as exc:
            log.warning("sso: sign-in refused: %s", exc)
            return self._message(request, "Sign-in refused", str(exc), exc.status)
        except StorageError:
            return self._unavailable(request)
        user = done.login.user
        previous = request.cookies.get(SESSION_COOKIE, "")
        address = request.client.host if request.client else ""
        agent = request.headers.get("user-agent", "")[:512]
        try:
            # The browser's earlier session ends, when the request carries it: a real browser
            # does not here (the callback comes from the provider's site and the session cookie
            # is SameSite=Strict); the new cookie then replaces it and the old session is left
            # to expire (idle or absolute timeout) with no browser holding it.
            if previous:
                await self.auth.end_session(previous)
            session_token, _ = await self.auth.start_session(
                user,
                address,
                agent,
                mfa=True,  # the provider's second factor, not ours
            )
        except StorageError:
            return self._unavailable(request)
        log.info(
            "sso: %s signed in as %s (%s)%s",
            done.subject,
            user.username,
            user.role,
            " (new user)" if done.login.created else "",
        )
        target = "/password" if user.must_change_password else done.next_path
        context = {
            "title": "Signed in",
            "message": f"Signed in as {user.username}.",
            "next": target,
        }
        response = self.p.templates.TemplateResponse(request, "sso_message.html", context)
        response.headers.append("set-cookie", self.auth.session_cookie(session_token))
        response.headers.append("set-cookie", self._browser_cookie("", 0))
        response.headers["cache-control"] = "no-store"
        return response

    # -- Settings → Single sign-on -------------------------------------------------------------

    async def settings(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        checks: list[Check] | None = None,
        status: int = 200,
    ) -> Response:
        who = principal(request)
        config, mappings = await service.settings(self.sys, who)
        page = SsoSettingsPage(
            **self.p.base(request, "Single sign-on", "settings"),
            config=config,
            mappings=mappings,
            identities=await service.identities(self.sys, who),
            users=await users.all_users(self.sys, who),
            groups=await group_service.all_groups(self.sys, who),
            checks=checks or [],
            redirect_uri=self._redirect_uri(request),
            secret_from_env=bool(os.environ.get(CLIENT_SECRET_ENV)),
            errors=errors or {},
            form=form or {},
        )
        return self.p.render(request, "sso_settings.html", page, status)

    async def save(self, request: Request) -> Response:
        form = fields(await request.form())
        values = {
            k: str(form.get(k, ""))[:MAX_FIELD].strip()
            for k in (
                "preset",
                "display_name",
                "discovery_url",
                "tenant_id",
                "client_id",
                "groups_claim",
            )
        }
        data = service.SsoSettingsInput(
            enabled=form.get("enabled") == "on",
            client_secret=str(form.get("client_secret", ""))[:MAX_FIELD],
            clear_secret=form.get("clear_secret") == "on",
            **values,
        )
        try:
            await service.save_settings(self.sys, principal(request), data, self.sealer)
        except HandleError as exc:
            return await self.settings(request, exc.fields, values, status=exc.status)
        return self.p.back("/settings/sso", "Single sign-on settings saved")

    async def test(self, request: Request) -> Response:
        checks = await service.test_settings(self.sys, principal(request), self.client, self.sealer)
        return await self.settings(request, checks=checks)

    async def save_mapping(self, request: Request) -> Response:
        form = await request.form()
        values = fields(form)
        claim_value = str(values.get("claim_value", "")).strip()
        role = str(values.get("role", ""))
        try:
            group_ids = tuple(int(str(g)) for g in form.getlist("group_id") if str(g))[:1000]
        except ValueError:
            return await self.settings(
                request, {"group_ids": "choose groups from the list"}, status=422
            )
        try:
            await service.save_claim_mapping(
                self.sys, principal(request), claim_value, role, group_ids
            )
        except HandleError as exc:
            return await self.settings(
                request, exc.fields, {"claim_value": claim_value[:MAX_FIELD]}, status=exc.status
            )
        return self.p.back("/settings/sso", f"Mapping of {claim_value!r} saved")

    async def delete_mapping(self, request: Request) -> Response:
        claim_value = str(fields(await request.form()).get("claim_value", ""))[:MAX_FIELD]
        deleted = await service.delete_claim_mapping(self.sys, principal(request), claim_value)
        notice = f"Mapping of {claim_value!r} deleted" if deleted else "There was no such mapping"
        return self.p.back("/settings/sso", notice)

    async def link(self, request: Request) -> Response:
        values = fields(await request.form())
        issuer = str(values.get("issuer", "")).strip()[:MAX_FIELD]
        subject = str(values.get("subject", "")).strip()[:MAX_FIELD]
        try:
            user_id = _form_id(values, "user_id")
            identity = await service.link(self.sys, principal(request), user_id, issuer, subject)
        except HandleError as exc:
            form = {"issuer": issuer, "subject": subject}
            return await self.settings(request, exc.fields, form, status=exc.status)
        return self.p.back(
            "/settings/sso", f"SSO identity {identity.subject} linked to {identity.username}"
        )

    async def unlink(self, request: Request) -> Response:
        values = fields(await request.form())
        try:
            user_id = _form_id(values, "user_id")
            identity_id = _form_id(values, "identity_id")
            identity = await service.unlink(self.sys, principal(request), user_id, identity_id)
        except HandleError as exc:
            return await self.settings(request, {"unlink": exc.message}, status=exc.status)
        return self.p.back(
            "/settings/sso", f"SSO identity {identity.subject} unlinked from {identity.username}"
        )

    def routes(self) -> list[Route]:
        return [
            Route("/sso/login", self.start, methods=["GET"], name="sso_login"),
            Route("/sso/callback", self.callback, methods=["GET"], name="sso_callback"),
            Route("/settings/sso", self.settings, methods=["GET"]),
            Route("/settings/sso/save", self.save, methods=["POST"]),
            Route("/settings/sso/test", self.test, methods=["POST"]),
            Route("/settings/sso/mappings", self.save_mapping, methods=["POST"]),
            Route("/settings/sso/mappings/delete", self.delete_mapping, methods=["POST"]),
            Route("/settings/sso/identities", self.link, methods=["POST"]),
            Route("/settings/sso/identities/delete", self.unlink, methods=["POST"]),
        ]
