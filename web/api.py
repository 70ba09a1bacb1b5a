"""The JSON API under /api/v1: everything the pages do. One error envelope everywhere."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import (
    Conflict,
    Database,
    NotFound,
    assign_hosts,
    create_group,
    delete_group,
    fleet_counts,
    get_host,
    health_history,
    installed_packages,
    list_groups,
    load_host_state,
    open_patches,
    rename_group,
    search_hosts,
)

from .errors import ApiError
from .forms import ValidationFailed, group_name, host_filter, host_ids, host_input
from .handle import SystemHandle
from .serialize import to_json


async def json_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/json":
        raise ApiError(415, "send a JSON body with Content-Type: application/json")
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def invalid(exc: ValidationFailed) -> ApiError:
    return ApiError(422, "some fields are invalid", details={"fields": exc.errors})


def path_id(request: Request, name: str = "host_id") -> int:
    return int(request.path_params[name])


def host_detail(handle: SystemHandle, db_row: Any, state: Any) -> dict[str, Any]:
    policy = handle.effective_policy(db_row.id)
    return {
        **to_json(db_row),
        "state": to_json(state),
        "live": to_json(handle.snapshot(db_row.id)),
        "policy": None
        if policy is None
        else {"values": to_json(policy.policy), "origins": dict(policy.origins)},
    }


class Api:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.handle = handle
        self.db = db

    async def _host_or_404(self, host_id: int) -> Any:
        try:
            return await self.db.run(get_host, host_id)
        except NotFound:
            raise ApiError(404, f"no host with id {host_id}") from None

    # -- hosts ------------------------------------------------------------------------------

    async def list_hosts(self, request: Request) -> Response:
        try:
            f = host_filter(request.query_params)
        except ValidationFailed as exc:
            raise invalid(exc) from None
        items, total = await self.db.run(search_hosts, f)
        return JSONResponse(
            {"hosts": to_json(items), "total": total, "limit": f.limit, "offset": f.offset}
        )

    async def create_host(self, request: Request) -> Response:
        try:
            data = host_input(await json_body(request))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        try:
            row = await self.handle.register_host(
                data.name, display_name=data.display_name, groups=data.groups, port=data.port
            )
        except ValueError as exc:
            field = getattr(exc, "field", "name")
            status = 409 if "already registered" in str(exc) else 422
            raise ApiError(
                status,
                getattr(exc, "message", str(exc)),
                details={"fields": {field: getattr(exc, "message", str(exc))}},
            ) from None
        return JSONResponse(to_json(row), status_code=201)

    async def get_host(self, request: Request) -> Response:
        row = await self._host_or_404(path_id(request))
        state = await self.db.run(load_host_state, row.id)
        return JSONResponse(host_detail(self.handle, row, state))

    async def delete_host(self, request: Request) -> Response:
        host_id = path_id(request)
        await self._host_or_404(host_id)
        await self.handle.remove_host(host_id)
        return Response(status_code=204)

    async def refresh_host(self, request: Request) -> Response:
        host_id = path_id(request)
        await self._host_or_404(host_id)
        return JSONResponse({"refreshing": self.handle.refresh([host_id])}, status_code=202)

    async def refresh_hosts(self, request: Request) -> Response:
        try:
            ids = host_ids((await json_body(request)).get("host_ids"))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        return JSONResponse({"refreshing": self.handle.refresh(ids)}, status_code=202)

    async def host_patches(self, request: Request) -> Response:
        row = await self._host_or_404(path_id(request))
        return JSONResponse({"patches": to_json(await self.db.run(open_patches, row.id))})

    async def host_packages(self, request: Request) -> Response:
        row = await self._host_or_404(path_id(request))
        items, total = await self.db.run(
            installed_packages, row.id, request.query_params.get("q", "")
        )
        return JSONResponse(
            {"packages": [{"name": n, "version": v} for n, v in items], "total": total}
        )

    async def host_history(self, request: Request) -> Response:
        row = await self._host_or_404(path_id(request))
        return JSONResponse({"transitions": to_json(await self.db.run(health_history, row.id))})

    async def host_policy(self, request: Request) -> Response:
        row = await self._host_or_404(path_id(request))
        policy = self.handle.effective_policy(row.id)
        if policy is None:
            raise ApiError(409, "the host's actor is not running yet")
        return JSONResponse({"values": to_json(policy.policy), "origins": dict(policy.origins)})

    async def actors(self, request: Request) -> Response:
        return JSONResponse({"actors": to_json(self.handle.snapshots())})

    async def summary(self, request: Request) -> Response:
        return JSONResponse(to_json(await self.db.run(fleet_counts)))

    # -- groups -----------------------------------------------------------------------------

    async def list_groups(self, request: Request) -> Response:
        return JSONResponse({"groups": to_json(await self.db.run(list_groups))})

    async def create_group(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            name = group_name(body.get("name"))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        description = str(body.get("description") or "")[:500]
        try:
            group = await self.db.run(create_group, name, description)
        except Conflict as exc:
            raise ApiError(409, str(exc), details={"fields": {"name": str(exc)}}) from None
        return JSONResponse(to_json(group), status_code=201)

    async def rename_group(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            name = group_name(body.get("name"))
            await self.db.run(rename_group, path_id(request, "group_id"), name)
        except ValidationFailed as exc:
            raise invalid(exc) from None
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except Conflict as exc:
            raise ApiError(409, str(exc), details={"fields": {"name": str(exc)}}) from None
        return JSONResponse({"id": path_id(request, "group_id"), "name": name})

    async def delete_group(self, request: Request) -> Response:
        try:
            await self.db.run(delete_group, path_id(request, "group_id"))
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return Response(status_code=204)

    async def assign_group(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            ids = host_ids(body.get("host_ids"))
        except ValidationFailed as exc:
            raise invalid(exc) from None
        member = body.get("member", True) is not False
        try:
            changed = await self.db.run(assign_hosts, path_id(request, "group_id"), ids, member)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return JSONResponse({"changed": changed})

    # -- discovery --------------------------------------------------------------------------

    async def _scan_or_404(self, scan_id: int) -> Any:
        scan = await self.handle.discovery(scan_id)
        if scan is None:
            raise ApiError(404, f"no discovery scan {scan_id}")
        return scan

    async def start_discovery(self, request: Request) -> Response:
        body = await json_body(request)
        cidr = body.get("cidr")
        if not isinstance(cidr, str) or not cidr.strip():
            raise ApiError(
                422,
                "some fields are invalid",
                details={"fields": {"cidr": "enter a range such as 10.0.0.0/24"}},
            )
        try:
            scan = await self.handle.start_discovery(cidr)
        except ValueError as exc:
            raise ApiError(422, str(exc), details={"fields": {"cidr": str(exc)}}) from None
        return JSONResponse(scan_json(scan), status_code=202)

    async def get_discovery(self, request: Request) -> Response:
        return JSONResponse(scan_json(await self._scan_or_404(path_id(request, "scan_id"))))

    async def cancel_discovery(self, request: Request) -> Response:
        scan_id = path_id(request, "scan_id")
        await self._scan_or_404(scan_id)
        return JSONResponse({"cancelled": self.handle.cancel_discovery(scan_id)})

    async def register_found(self, request: Request) -> Response:
        scan_id = path_id(request, "scan_id")
        await self._scan_or_404(scan_id)
        addresses = (await json_body(request)).get("addresses")
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ApiError(
                422,
                "some fields are invalid",
                details={"fields": {"addresses": "a list of addresses"}},
            )
        try:
            rows = await self.handle.register_found(scan_id, addresses)
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"registered": to_json(rows)}, status_code=201)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/hosts", self.list_hosts, methods=["GET"]),
            Route("/api/v1/hosts", self.create_host, methods=["POST"]),
            Route("/api/v1/hosts/refresh", self.refresh_hosts, methods=["POST"]),
            Route("/api/v1/hosts/{host_id:int}", self.get_host, methods=["GET"]),
            Route("/api/v1/hosts/{host_id:int}", self.delete_host, methods=["DELETE"]),
            Route("/api/v1/hosts/{host_id:int}/refresh", self.refresh_host, methods=["POST"]),
            Route("/api/v1/hosts/{host_id:int}/patches", self.host_patches, methods=["GET"]),
            Route("/api/v1/hosts/{host_id:int}/packages", self.host_packages, methods=["GET"]),
            Route("/api/v1/hosts/{host_id:int}/history", self.host_history, methods=["GET"]),
            Route("/api/v1/hosts/{host_id:int}/policy", self.host_policy, methods=["GET"]),
            Route("/api/v1/actors", self.actors, methods=["GET"]),
            Route("/api/v1/fleet/summary", self.summary, methods=["GET"]),
            Route("/api/v1/groups", self.list_groups, methods=["GET"]),
            Route("/api/v1/groups", self.create_group, methods=["POST"]),
            Route("/api/v1/groups/{group_id:int}", self.rename_group, methods=["PATCH"]),
            Route("/api/v1/groups/{group_id:int}", self.delete_group, methods=["DELETE"]),
            Route("/api/v1/groups/{group_id:int}/hosts", self.assign_group, methods=["POST"]),
            Route("/api/v1/discovery", self.start_discovery, methods=["POST"]),
            Route("/api/v1/discovery/{scan_id:int}", self.get_discovery, methods=["GET"]),
            Route(
                "/api/v1/discovery/{scan_id:int}/cancel", self.cancel_discovery, methods=["POST"]
            ),
            Route(
                "/api/v1/discovery/{scan_id:int}/register", self.register_found, methods=["POST"]
            ),
        ]


def scan_json(scan: Any) -> dict[str, Any]:
    return {
        "scan_id": scan.scan_id,
        "progress": to_json(scan.progress),
        "found": to_json(sorted(scan.found, key=lambda f: tuple(map(int, f.address.split("."))))),
    }
