"""The JSON API under /api/v1 for hosts, groups and discovery: typed models in, the service
layer, typed models out. One error envelope everywhere (``web.errors``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import Database

from . import models as m
from .errors import ApiError
from .handle import SystemHandle
from .models_io import body, path_id, query, record, reply
from .serialize import to_json
from .services import System, discovery, groups, hosts, principal
from .services import discovery as discovery_service
from .services.hosts import HostDetail

__all__ = ["Api", "scan_json"]


def scan_json(scan: Any) -> dict[str, Any]:
    """A scan as JSON-ready values (the relay sends it as is)."""
    return to_json(discovery_service.scan_json(scan))  # type: ignore[no-any-return]


def host_detail(detail: HostDetail) -> Response:
    policy = detail.policy
    return reply(
        m.HostDetail,
        **record(detail.row),
        state=detail.state,
        live=hosts.live_json(detail.live),
        policy=None
        if policy is None
        else m.Policy(values=record(policy.policy), origins=dict(policy.origins)),
    )


class Api:
    def __init__(self, handle: SystemHandle, db: Database) -> None:
        self.sys = System(handle, db)

    # -- hosts ------------------------------------------------------------------------------

    async def list_hosts(self, request: Request) -> Response:
        items, total, f = await hosts.search(
            self.sys, principal(request), query(request, m.HostQuery)
        )
        return reply(m.HostList, hosts=items, total=total, limit=f.limit, offset=f.offset)

    async def create_host(self, request: Request) -> Response:
        data = await body(request, m.HostCreate)
        row = await hosts.register(self.sys, principal(request), data)
        return reply(m.HostOut, 201, **record(row))

    async def get_host(self, request: Request) -> Response:
        detail = await hosts.detail(self.sys, principal(request), path_id(request, "host_id"))
        return host_detail(detail)

    async def delete_host(self, request: Request) -> Response:
        await hosts.remove(self.sys, principal(request), path_id(request, "host_id"))
        return Response(status_code=204)

    async def refresh_host(self, request: Request) -> Response:
        count = await hosts.refresh(self.sys, principal(request), [path_id(request, "host_id")])
        return reply(m.Refreshing, 202, refreshing=count)

    async def refresh_hosts(self, request: Request) -> Response:
        data = await body(request, m.HostIds)
        count = await hosts.refresh(self.sys, principal(request), data.host_ids)
        return reply(m.Refreshing, 202, refreshing=count)

    async def host_patches(self, request: Request) -> Response:
        items = await hosts.patches(self.sys, principal(request), path_id(request, "host_id"))
        return reply(m.Patches, patches=items)

    async def host_packages(self, request: Request) -> Response:
        q = query(request, m.PackageQuery)
        items, total = await hosts.packages(
            self.sys, principal(request), path_id(request, "host_id"), q.q
        )
        packages = [m.Package(name=n, version=v) for n, v in items]
        return reply(m.Packages, packages=packages, total=total)

    async def host_history(self, request: Request) -> Response:
        items = await hosts.history(self.sys, principal(request), path_id(request, "host_id"))
        return reply(m.History, transitions=items)

    async def host_policy(self, request: Request) -> Response:
        detail = await hosts.detail(self.sys, principal(request), path_id(request, "host_id"))
        if detail.policy is None:
            raise ApiError(409, "the host's actor is not running yet")
        return reply(
            m.Policy, values=record(detail.policy.policy), origins=dict(detail.policy.origins)
        )

    async def actors(self, request: Request) -> Response:
        return reply(m.Actors, actors=await hosts.actors_json(self.sys, principal(request)))

    async def summary(self, request: Request) -> Response:
        counts = await hosts.summary(self.sys, principal(request))
        return reply(m.FleetSummary, **record(counts))

    # -- groups -----------------------------------------------------------------------------

    async def list_groups(self, request: Request) -> Response:
        return reply(m.Groups, groups=await groups.all_groups(self.sys, principal(request)))

    async def create_group(self, request: Request) -> Response:
        data = await body(request, m.GroupCreate)
        group = await groups.create(self.sys, principal(request), data)
        return reply(m.Group, 201, **record(group))

    async def rename_group(self, request: Request) -> Response:
        group_id = path_id(request, "group_id")
        data = await body(request, m.GroupRename)
        await groups.rename(self.sys, principal(request), group_id, data.name)
        return reply(m.GroupRenamed, id=group_id, name=data.name)

    async def delete_group(self, request: Request) -> Response:
        await groups.delete(self.sys, principal(request), path_id(request, "group_id"))
        return Response(status_code=204)

    async def assign_group(self, request: Request) -> Response:
        group_id = path_id(request, "group_id")
        data = await body(request, m.GroupMembership)
        changed = await groups.assign(
            self.sys, principal(request), group_id, data.host_ids, data.member
        )
        return reply(m.Changed, changed=changed)

    # -- discovery --------------------------------------------------------------------------

    async def start_discovery(self, request: Request) -> Response:
        data = await body(request, m.DiscoveryStart)
        scan = await discovery.start(self.sys, principal(request), data.cidr)
        return reply(m.Scan, 202, **discovery_service.scan_json(scan))

    async def get_discovery(self, request: Request) -> Response:
        scan = await discovery.get(self.sys, principal(request), path_id(request, "scan_id"))
        return reply(m.Scan, **discovery_service.scan_json(scan))

    async def cancel_discovery(self, request: Request) -> Response:
        cancelled = await discovery.cancel(
            self.sys, principal(request), path_id(request, "scan_id")
        )
        return reply(m.ScanCancelled, cancelled=cancelled)

    async def register_found(self, request: Request) -> Response:
        scan_id = path_id(request, "scan_id")
        data = await body(request, m.Addresses)
        rows = await discovery.register_found(self.sys, principal(request), scan_id, data.addresses)
        return reply(m.Registered, 201, registered=rows)

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
