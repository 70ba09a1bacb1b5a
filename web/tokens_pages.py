"""Profile → Security → API tokens (``/tokens``): create a token (scope, expiry, optional groups;
its secret shown once on the answer page), list one's own (admins: everyone's) with created,
last use and expiry, revoke. The rules are ``web.tokens`` (the same as the API and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import GroupItem, load_principal
from storage.tokens import TokenItem

from .authz import Action, may
from .forms import fields
from .handle import HandleError, Missing
from .models_io import path_id, validate
from .pages import Base, Pages
from .services import groups, principal
from .tokens import Tokens
from .tokens_api import TokenCreate


@dataclass(frozen=True)
class TokensPage(Base):
    tokens: list[TokenItem] = field(default_factory=list)
    everyone: list[TokenItem] = field(default_factory=list)  # admins: all users' tokens
    groups: list[GroupItem] = field(default_factory=list)
    max_days: int = 90
    created: TokenItem | None = None
    secret: str = ""  # the new token, on the answer to its creation only
    errors: dict[str, str] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)


class TokenPages:
    def __init__(self, pages: Pages, tokens: Tokens) -> None:
        self.p = pages
        self.tokens = tokens

    async def page(self, request: Request, *, status: int = 200, **extra: Any) -> Response:
        who = principal(request)
        everyone = (
            await self.tokens.list(who, everyone=True) if may(who, Action.MANAGE_USERS) else []
        )
        page = TokensPage(
            **self.p.base(request, "API tokens", "profile"),
            tokens=await self.tokens.list(who),
            everyone=[t for t in everyone if t.user_id != who.user_id],
            groups=await groups.all_groups(self.p.sys, who),
            max_days=self.tokens.max_days,
            **extra,
        )
        return self.p.render(request, "tokens.html", page, status)

    async def show(self, request: Request) -> Response:
        return await self.page(request)

    async def create(self, request: Request) -> Response:
        form = await request.form()
        values: dict[str, Any] = {k: v for k, v in fields(form).items() if k != "group_ids"}
        chosen = [str(g) for g in form.getlist("group_ids")]
        shown = {**values, "group_ids": chosen}
        who = principal(request)
        try:
            data = validate(TokenCreate, {
                **{k: v for k, v in values.items() if k in TokenCreate.model_fields and v},
                **({"group_ids": chosen} if chosen else {}),
            })  # fmt: skip
            owner = await self.p.db.run(load_principal, who.user_id)
            if owner is None:
                raise Missing("no such user")
            item, secret = await self.tokens.create(
                who, owner=owner, name=data.name, scope=data.scope, days=data.expires_days,
                group_ids=data.group_ids,
            )  # fmt: skip
        except HandleError as exc:
            return await self.page(request, status=exc.status, errors=exc.fields, form=shown)
        return await self.page(request, status=201, created=item, secret=secret)

    async def revoke(self, request: Request) -> Response:
        item = await self.tokens.revoke(principal(request), path_id(request, "token_id"))
        return self.p.back("/tokens", f"Token '{item.name}' of {item.username} revoked")

    def routes(self) -> list[Route]:
        return [
            Route("/tokens", self.p.zoned(self.show), methods=["GET"]),
            Route("/tokens", self.p.zoned(self.create), methods=["POST"]),
            Route("/tokens/{token_id:int}/revoke", self.revoke, methods=["POST"]),
        ]
