"""The JSON API of a user's SSO identities (admins): list, link (issuer, subject) explicitly,
unlink. An identity is never linked by e-mail address; the sign-in itself is a browser flow
(``web.sso_pages``)."""

from __future__ import annotations

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage.sso import SsoIdentity

from .models import Body, Reply
from .models_io import body, path_id, reply
from .services import System, principal
from .services import sso as service


class SsoIdentityLink(Body):
    issuer: str = Field(
        min_length=1, max_length=512, description="the provider's issuer, as in its id_tokens"
    )
    subject: str = Field(
        min_length=1, max_length=256, description="the identity's sub (Entra: the user's oid)"
    )


class SsoIdentityOut(Reply):
    identity: SsoIdentity


class SsoIdentityUnlinked(Reply):
    unlinked: bool = Field(description="false: the identity was not linked to this user")


class SsoIdentities(Reply):
    identities: list[SsoIdentity]


class SsoApi:
    def __init__(self, sys: System) -> None:
        self.sys = sys

    async def list_identities(self, request: Request) -> Response:
        user_id = path_id(request, "user_id")
        await service.require_user(self.sys, principal(request), user_id)
        found = await service.identities(self.sys, principal(request), user_id)
        return reply(SsoIdentities, identities=found)

    async def link(self, request: Request) -> Response:
        user_id = path_id(request, "user_id")
        data = await body(request, SsoIdentityLink)
        found = await service.link(self.sys, principal(request), user_id, data.issuer, data.subject)
        return reply(SsoIdentityOut, 201, identity=found)

    async def unlink(self, request: Request) -> Response:
        user_id = path_id(request, "user_id")
        data = await body(request, SsoIdentityLink)
        gone = await service.unlink_key(
            self.sys, principal(request), user_id, data.issuer, data.subject
        )
        return reply(SsoIdentityUnlinked, unlinked=gone)

    def routes(self) -> list[Route]:
        many = "/api/v1/users/{user_id:int}/sso-identities"
        return [
            Route(many, self.list_identities, methods=["GET"]),
            Route(many, self.link, methods=["POST"]),
            Route(many + "/unlink", self.unlink, methods=["POST"]),
        ]
