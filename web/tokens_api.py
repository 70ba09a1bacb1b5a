"""The JSON API of API tokens (R-7.6) and the access-JWT exchange (R-7.3).

- ``GET /api/v1/tokens`` (own; ``?all=true``: everyone's, admins), ``POST /api/v1/tokens``
  (the secret is in this one answer only), ``DELETE /api/v1/tokens/{token_id}`` (own; admins:
  anyone's). A session is needed: a token never manages tokens.
- ``POST /api/v1/auth/token`` (no session): ``{"grant_type": "api_token", "token": "pm_…"}``
  or ``{"grant_type": "refresh_token", "refresh_token": "pmr_…"}`` → a 15-minute access JWT
  and the next refresh token. ``GET /api/v1/auth/jwks.json``: the verifying public keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import load_principal
from storage.tokens import TokenItem

from .errors import envelope
from .handle import Missing
from .models import Body, Id, Query, Reply
from .models_io import body, path_id, query, reply
from .services import principal
from .tokens import Refused, Tokens

# -- models -----------------------------------------------------------------------------------

TokenScopeName = Literal["read", "operate", "metrics"]


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=100, description="what uses the token")
    scope: TokenScopeName
    expires_days: int | None = Field(
        None, ge=1, le=3650,
        description="at most auth.token_max_days (default 90, or that maximum when lower)",
    )  # fmt: skip
    group_ids: list[Id] | None = Field(
        None, max_length=1000, description="only these groups' hosts (within the owner's)"
    )


class TokenQuery(Query):
    all: bool = Field(False, description="everyone's tokens (admins)")


class TokenList(Reply):
    tokens: list[TokenItem]


class TokenCreated(Reply):
    token: str = Field(description="the secret: shown in this answer only, stored hashed")
    item: TokenItem


class TokenGrantRequest(Body):
    grant_type: Literal["api_token", "refresh_token"]
    token: str = Field("", max_length=200, description="the API token (grant_type api_token)")
    refresh_token: str = Field("", max_length=200, description="(grant_type refresh_token)")


class TokenGrant(Reply):
    access_token: str = Field(description="ES256 JWT; send as Authorization: Bearer")
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str = Field(description="single use; a second use revokes its family")
    refresh_expires_in: int
    scope: TokenScopeName


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    use: str
    alg: str


class Jwks(Reply):
    keys: list[Jwk]


# -- routes -----------------------------------------------------------------------------------


class TokensApi:
    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def list_tokens(self, request: Request) -> Response:
        wanted = query(request, TokenQuery)
        found = await self.tokens.list(principal(request), everyone=wanted.all)
        return reply(TokenList, tokens=found)

    async def create_token(self, request: Request) -> Response:
        data = await body(request, TokenCreate)
        who = principal(request)
        owner = await self.tokens.db.run(load_principal, who.user_id) if who.user_id else None
        if owner is None:
            raise Missing("no such user")
        item, secret = await self.tokens.create(
            who, owner=owner, name=data.name, scope=data.scope,
            days=data.expires_days,
            group_ids=data.group_ids,
        )  # fmt: skip
        return reply(TokenCreated, 201, token=secret, item=item)

    async def revoke_token(self, request: Request) -> Response:
        await self.tokens.revoke(principal(request), path_id(request, "token_id"))
        return Response(status_code=204)

    async def exchange(self, request: Request) -> Response:
        data = await body(request, TokenGrantRequest)
        if data.grant_type == "api_token":
            answer = await self.tokens.exchange(data.token)
        else:
            answer = await self.tokens.refresh(data.refresh_token)
        if isinstance(answer, Refused):
            return envelope(request, answer.status, answer.code, answer.message)
        response = reply(TokenGrant, **answer)
        response.headers["cache-control"] = "no-store"
        return response

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(await self.tokens.keys.jwks())

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/tokens", self.list_tokens, methods=["GET"]),
            Route("/api/v1/tokens", self.create_token, methods=["POST"]),
            Route("/api/v1/tokens/{token_id:int}", self.revoke_token, methods=["DELETE"]),
            Route("/api/v1/auth/token", self.exchange, methods=["POST"]),
            Route("/api/v1/auth/jwks.json", self.jwks, methods=["GET"]),
        ]
