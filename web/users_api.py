"""The JSON API of users and sessions under /api/v1/users and /api/v1/profile (R-7.1, R-7.3)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import Database

from . import models as m
from .auth import Auth
from .handle import SystemHandle
from .models_io import body, path_id, record, reply
from .services import System, principal, users


class UsersApi:
    def __init__(self, handle: SystemHandle, db: Database, auth: Auth) -> None:
        self.sys = System(handle, db)
        self.auth = auth

    async def list_users(self, request: Request) -> Response:
        return reply(m.Users, users=await users.all_users(self.sys, principal(request)))

    async def create_user(self, request: Request) -> Response:
        data = await body(request, m.UserCreate)
        user, password = await users.create(self.sys, principal(request), self.auth, data)
        return reply(m.UserCreated, 201, user=user, password=password)

    async def get_user(self, request: Request) -> Response:
        user = await users.get(self.sys, principal(request), path_id(request, "user_id"))
        return reply(m.UserOut, **record(user))

    async def update_user(self, request: Request) -> Response:
        user_id = path_id(request, "user_id")
        data = await body(request, m.UserUpdate)
        user = await users.update(self.sys, principal(request), user_id, data)
        return reply(m.UserOut, **record(user))

    async def unlock_user(self, request: Request) -> Response:
        user = await users.unlock(self.sys, principal(request), path_id(request, "user_id"))
        return reply(m.UserOut, **record(user))

    async def reset_password(self, request: Request) -> Response:
        password = await users.reset_password(
            self.sys, principal(request), self.auth, path_id(request, "user_id")
        )
        return reply(m.PasswordReset, password=password)

    async def reset_mfa(self, request: Request) -> Response:
        _, ended = await users.reset_mfa(
            self.sys, principal(request), self.auth, path_id(request, "user_id")
        )
        return reply(m.SessionsRevoked, revoked=ended)

    async def list_sessions(self, request: Request) -> Response:
        found = await users.sessions(self.sys, principal(request), path_id(request, "user_id"))
        return reply(m.Sessions, sessions=found)

    async def revoke_sessions(self, request: Request) -> Response:
        ended = await users.revoke_all(self.sys, principal(request), path_id(request, "user_id"))
        return reply(m.SessionsRevoked, revoked=ended)

    async def revoke_session(self, request: Request) -> Response:
        await users.revoke(
            self.sys,
            principal(request),
            path_id(request, "user_id"),
            path_id(request, "session_id"),
        )
        return Response(status_code=204)

    async def change_password(self, request: Request) -> Response:
        """The caller's own password. Every other session ends; this one is rotated (a new
        cookie)."""
        data = await body(request, m.PasswordChange)
        session = request.scope["state"]["session"]
        await users.change_password(
            self.sys, principal(request), self.auth, data, keep_family=session.family_id
        )
        token = await self.auth.rotate(request.scope["state"].get("session_token", ""))
        response = Response(status_code=204)
        if token:
            response.headers.append("set-cookie", self.auth.session_cookie(token))
        return response

    def routes(self) -> list[Route]:
        one = "/api/v1/users/{user_id:int}"
        return [
            Route("/api/v1/users", self.list_users, methods=["GET"]),
            Route("/api/v1/users", self.create_user, methods=["POST"]),
            Route(one, self.get_user, methods=["GET"]),
            Route(one, self.update_user, methods=["PATCH"]),
            Route(one + "/unlock", self.unlock_user, methods=["POST"]),
            Route(one + "/reset-password", self.reset_password, methods=["POST"]),
            Route(one + "/reset-mfa", self.reset_mfa, methods=["POST"]),
            Route(one + "/sessions", self.list_sessions, methods=["GET"]),
            Route(one + "/sessions", self.revoke_sessions, methods=["DELETE"]),
            Route(one + "/sessions/{session_id:int}", self.revoke_session, methods=["DELETE"]),
            Route("/api/v1/profile/password", self.change_password, methods=["POST"]),
        ]
