"""The Settings page (admins, issue 14 item 6): the repository configuration agents fetch at
enrolment (agent-api §7.4), listed per distro id, added or replaced, deleted. The same model
(``pki_models.RepoConfig``) and service functions (``services.certificates``) as the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .forms import fields
from .handle import HandleError
from .models_io import validate
from .pages import Base, Pages
from .pki_models import DistroId, RepoConfig
from .services import certificates as certs
from .services import principal

REPO_FIELDS = ("distro_id", "gpg_public_key", "sources_config", "keyring_path")


@dataclass(frozen=True)
class SettingsPage(Base):
    repo_configs: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)


class SettingsPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.sys = pages.sys

    async def settings(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        found = await certs.list_repo_configs(self.sys, principal(request))
        page = SettingsPage(
            **self.p.base(request, "Settings", "settings"),
            repo_configs=sorted(found, key=lambda c: str(c["distro_id"])),
            errors=errors or {},
            form=form or {},
        )
        return self.p.render(request, "settings.html", page, status)

    async def save_repo(self, request: Request) -> Response:
        form = fields(await request.form())
        values = {k: form.get(k, "") for k in REPO_FIELDS}
        try:
            data = validate(RepoConfig, values)
            await certs.save_repo(self.sys, principal(request), data.model_dump())
        except HandleError as exc:
            return await self.settings(request, exc.fields, values, exc.status)
        return self.p.back("/settings", f"Repository configuration for {data.distro_id} saved")

    async def delete_repo(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            data = validate(DistroId, {"distro_id": form.get("distro_id", "")})
            deleted = await certs.delete_repo(self.sys, principal(request), data.distro_id)
        except HandleError as exc:
            return await self.settings(request, {"delete": exc.message}, status=exc.status)
        if not deleted:
            return self.p.back("/settings", f"There was no configuration for {data.distro_id}")
        return self.p.back("/settings", f"Repository configuration for {data.distro_id} deleted")

    def routes(self) -> list[Route]:
        return [
            Route("/settings", self.settings, methods=["GET"]),
            Route("/settings/repo-configs", self.save_repo, methods=["POST"]),
            Route("/settings/repo-configs/delete", self.delete_repo, methods=["POST"]),
        ]
