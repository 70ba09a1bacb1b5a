"""Server-rendered pages (Jinja2). Each page has one typed context; forms post back with a CSRF
token and invalid input re-renders the page with the messages next to the fields."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from reports import ComplianceRules, svg
from storage import (
    HEALTH_STATES,
    Database,
    FleetCounts,
    GroupItem,
    HostFilter,
    HostListItem,
    PatchItem,
    Transition,
)

from .auth import Auth
from .authz import Action, allowed, require
from .forms import fields, host_form, host_query
from .freshness import (
    HostView,
    UserZones,
    age,
    duration,
    host_view,
    time_tag,
    zone_names,
)
from .handle import HandleError, Missing, SystemHandle
from .models import MAX_ID, DiscoveryStart, GroupCreate, GroupRename, HostIds, PackageQuery
from .models_io import given, path_id, validate
from .serialize import to_json
from .services import System, concurrently, discovery, groups, hosts, jobs, principal, windows
from .services import certificates as certs
from .services import reports as report_service
from .services.discovery import scan_json


@dataclass(frozen=True)
class Base:
    title: str
    nav: str
    user: str
    csrf_token: str
    notice: str = ""
    can: frozenset[str] = frozenset()  # the actions (``authz.Action`` values) the role may do
    tz: str = "UTC"  # the user's time zone (profile): the ``when`` filter shows times in it


@dataclass(frozen=True)
class DashboardPage(Base):
    counts: FleetCounts | None = None
    top_hosts: list[HostListItem] = field(default_factory=list)
    reboot_hosts: list[HostListItem] = field(default_factory=list)
    upcoming: list[dict[str, Any]] = field(default_factory=list)
    running_jobs: list[Any] = field(default_factory=list)
    compliance: Any = None  # services.reports.DashboardCompliance
    sparkline: str = ""  # SVG built by reports.svg (values escaped)
    loaded_at: dt.datetime | None = None  # what the lists and bars below show is as of then
    certificate_warnings: list[str] = field(default_factory=list)  # admins: expiring soon
    conditions: dict[str, int] = field(default_factory=dict)  # hosts by condition (freshness)
    views: dict[int, HostView] = field(default_factory=dict)  # of the listed hosts


@dataclass(frozen=True)
class HostsPage(Base):
    hosts: Sequence[HostListItem] = field(default_factory=list)
    total: int = 0
    page: int = 1
    pages: int = 1
    query: dict[str, str] = field(default_factory=dict)
    groups: list[GroupItem] = field(default_factory=list)
    health_states: tuple[str, ...] = HEALTH_STATES
    errors: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    views: dict[int, HostView] = field(default_factory=dict)  # condition, why, data age


@dataclass(frozen=True)
class HostPage(Base):
    host: Any = None
    state: Any = None
    live: dict[str, Any] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    patches: list[PatchItem] = field(default_factory=list)
    packages: list[tuple[str, str]] = field(default_factory=list)
    package_total: int = 0
    package_query: str = ""
    policy: list[tuple[str, Any, str]] = field(default_factory=list)
    compliance: Any = None  # reports.HostCompliance, the compliance report's verdict
    view: HostView | None = None


@dataclass(frozen=True)
class GroupsPage(Base):
    groups: list[GroupItem] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoveryPage(Base):
    scan: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    cidr: str = ""
    registered: dict[str, Any] = field(default_factory=dict)  # address → RegisteredAddress
    history: list[Any] = field(default_factory=list)  # storage.display.ScanSummary, newest first


class Pages:
    def __init__(self, handle: SystemHandle, db: Database, auth: Auth,
                 templates: Jinja2Templates,
                 rules: ComplianceRules | None = None) -> None:  # fmt: skip
        self.rules = rules or ComplianceRules()
        self.compliance = report_service.DashboardCache()
        self.handle = handle
        self.db = db
        self.sys = System(handle, db)
        self.auth = auth
        self.templates = templates
        self.zones = UserZones()
        templates.env.filters["when"] = when
        templates.env.filters["ago"] = age
        templates.env.globals["duration"] = duration
        templates.env.globals["zone_names"] = zone_names
        templates.env.globals["host_aside"] = host_aside

    # -- helpers ----------------------------------------------------------------------------

    def base(self, request: Request, title: str, nav: str) -> dict[str, Any]:
        session = request.scope["state"]["session"]
        return {
            "title": title,
            "nav": nav,
            "user": session.user.username,
            "csrf_token": session.csrf_token,
            "notice": request.query_params.get("notice", "")[:200],
            "can": allowed(principal(request)),
            "tz": self.zones.get(session.user.id),
        }

    def zoned(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` after the user's time zone is known (``base`` is synchronous)."""

        async def with_zone(request: Request) -> Response:
            session = request.scope["state"].get("session")
            if session is not None:
                await self.zones.ensure(self.db, session.user.id)
            return await endpoint(request)

        return with_zone

    def views(self, items: Sequence[HostListItem], tz: str) -> dict[int, HostView]:
        """Each listed host's condition, reason and data age (from its live snapshot)."""
        return {
            h.id: host_view(
                to_json(self.handle.snapshot(h.id)),
                health=h.health,
                reason=h.health_reason,
                last_seen=h.last_seen_at,
                tz=tz,
            )
            for h in items
        }

    def render(self, request: Request, template: str, page: Any, status: int = 200) -> Response:
        context = {f: getattr(page, f) for f in page.__dataclass_fields__}
        return self.templates.TemplateResponse(
            request, template, {"page": page, **context}, status_code=status
        )

    @staticmethod
    def back(path: str, notice: str = "") -> RedirectResponse:
        target = path + (f"?{urlencode({'notice': notice})}" if notice else "")
        return RedirectResponse(target, status_code=303)

    # -- dashboard --------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        who = principal(request)
        most_pending = HostFilter(sort="pending", descending=True, min_pending=1, limit=10)
        # Independent reads at once: one page load waits for the slowest, not for their sum
        # (each is a hop to a worker thread and back to a loop the host actors keep busy).
        counts, top, reboot, upcoming, running, compliance = await concurrently(
            lambda: hosts.summary(self.sys, who),
            lambda: hosts.find(self.sys, who, most_pending),
            lambda: hosts.find(self.sys, who, HostFilter(reboot=True, limit=10)),
            lambda: windows.upcoming_entries(self.sys, who, 14),
            lambda: jobs.jobs(self.sys, who, "running"),
            lambda: self.compliance.get(self.sys, who, self.rules),
        )
        upcoming = upcoming[:6]
        running = [j for j, _ in running][:6]
        base = self.base(request, "Dashboard", "dashboard")
        # By condition as of now (services.hosts.summary): never-contacted hosts under "pending"
        conditions = {
            ("pending" if k == "unknown" else k): v for k, v in counts.by_condition.items()
        }
        page = DashboardPage(
            **base,
            conditions=conditions,
            views=self.views([*top, *reboot], base["tz"]),
            counts=counts,
            top_hosts=top,
            reboot_hosts=reboot,
            upcoming=upcoming,
            running_jobs=running,
            compliance=compliance,
            sparkline=svg.sparkline(compliance.trend, label="daily compliance, last 30 days"),
            loaded_at=dt.datetime.now(dt.UTC),
            certificate_warnings=certs.expiry_warnings(self.sys, who),
        )
        return self.render(request, "dashboard.html", page)

    # -- hosts ------------------------------------------------------------------------------

    async def hosts(
        self,
        request: Request,
        *,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        query = {k: v for k, v in request.query_params.items() if k != "notice"}
        try:
            q = host_query(query)
        except HandleError as exc:
            errors = {**(errors or {}), **exc.fields}
            q = host_query({})
            status = 422
        items, total, f = await hosts.search(self.sys, principal(request), q)
        base = self.base(request, "Hosts", "hosts")
        page = HostsPage(
            **base,
            views=self.views(items, base["tz"]),
            hosts=items,
            total=total,
            page=f.offset // f.limit + 1,
            pages=max(1, math.ceil(total / f.limit)),
            query=query,
            groups=await groups.all_groups(self.sys, principal(request)),
            errors=errors or {},
            form=form or {},
        )
        return self.render(request, "hosts.html", page, status)

    async def add_host(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            row = await hosts.register(self.sys, principal(request), host_form(form))
        except HandleError as exc:
            return await self.hosts(request, errors=exc.fields, form=form, status=exc.status)
        return self.back(f"/hosts/{row.id}", f"Host {row.name} registered")

    async def bulk(self, request: Request) -> Response:
        form = await request.form()
        action = str(form.get("action", ""))
        try:
            ids = validate(HostIds, {"host_ids": [str(v) for v in form.getlist("host_id")]})
        except HandleError:
            return self.back("/hosts", "Select at least one host first")
        who = principal(request)
        if action == "deploy":
            return self.back("/deploy?" + urlencode({"host_ids": ",".join(map(str, ids.host_ids))}))
        if action == "refresh":
            count = await hosts.refresh(self.sys, who, ids.host_ids)
            return self.back("/hosts", f"Refreshing {count} host(s)")
        if action in ("assign", "unassign"):
            group_id = str(form.get("group_id", ""))
            if not group_id.isdigit() or not 1 <= int(group_id) <= MAX_ID:
                return self.back("/hosts", "Choose a group")
            try:
                changed = await groups.assign(
                    self.sys, who, int(group_id), ids.host_ids, action == "assign"
                )
            except Missing:
                return self.back("/hosts", "That group no longer exists")
            return self.back("/hosts", f"Group membership changed for {changed} host(s)")
        return self.back("/hosts", "Unknown action")

    async def host(self, request: Request) -> Response:
        who = principal(request)
        try:
            detail = await hosts.detail(self.sys, who, path_id(request, "host_id"))
        except Missing:
            return self.not_found(
                request, f"There is no host with id {request.path_params['host_id']}."
            )
        row = detail.row
        try:
            q = validate(PackageQuery, given(request.query_params)).q
        except HandleError:
            q = ""
        packages, total = await hosts.packages(self.sys, who, row.id, q)
        policy = detail.policy
        rows = []
        if policy is not None:
            values = asdict(policy.policy)
            rows = [(k, v, policy.origins.get(k, "")) for k, v in values.items()]
        base = self.base(request, row.display_name or row.name, "hosts")
        page = HostPage(
            **base,
            view=host_view(
                to_json(detail.live),
                health=detail.state.health if detail.state else "pending",
                reason=detail.state.health_reason if detail.state else "",
                last_seen=detail.state.last_seen_at if detail.state else None,
                tz=base["tz"],
            ),
            host=row,
            state=detail.state,
            live=to_json(detail.live) or {},
            history=list(reversed(await hosts.history(self.sys, who, row.id)))[:50],
            patches=await hosts.patches(self.sys, who, row.id),
            packages=packages,
            package_total=total,
            package_query=q,
            policy=rows,
            compliance=await report_service.host_compliance(self.sys, who, self.rules, row.id),
        )
        return self.render(request, "host.html", page)

    async def refresh_host(self, request: Request) -> Response:
        host_id = path_id(request, "host_id")
        await hosts.refresh(self.sys, principal(request), [host_id])
        return self.back(f"/hosts/{host_id}", "Refresh requested")

    async def remove_host(self, request: Request) -> Response:
        try:
            row = await hosts.remove(self.sys, principal(request), path_id(request, "host_id"))
        except Missing:
            return self.back("/hosts", "That host was already removed")
        return self.back("/hosts", f"Host {row.name} removed")

    # -- groups -----------------------------------------------------------------------------

    async def groups(
        self, request: Request, errors: dict[str, str] | None = None, status: int = 200
    ) -> Response:
        page = GroupsPage(
            **self.base(request, "Groups", "groups"),
            groups=await groups.all_groups(self.sys, principal(request)),
            errors=errors or {},
        )
        return self.render(request, "groups.html", page, status)

    async def create_group(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            data = validate(GroupCreate, given(form))
            await groups.create(self.sys, principal(request), data)
        except HandleError as exc:
            return await self.groups(request, exc.fields, exc.status)
        return self.back("/groups", f"Group {data.name} created")

    async def rename_group(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            data = validate(GroupRename, given(form))
            await groups.rename(
                self.sys, principal(request), path_id(request, "group_id"), data.name
            )
        except HandleError as exc:
            return await self.groups(request, {"rename": exc.message}, exc.status)
        except Missing as exc:
            return await self.groups(request, {"rename": str(exc)}, 404)
        return self.back("/groups", f"Group renamed to {data.name}")

    async def delete_group(self, request: Request) -> Response:
        try:
            await groups.delete(self.sys, principal(request), path_id(request, "group_id"))
        except Missing:
            return self.back("/groups", "That group was already deleted")
        return self.back("/groups", "Group deleted")

    # -- discovery --------------------------------------------------------------------------

    async def discovery(
        self,
        request: Request,
        errors: dict[str, str] | None = None,
        cidr: str = "",
        status: int = 200,
    ) -> Response:
        scan = None
        require(principal(request), Action.DISCOVER)
        if "scan_id" in request.path_params:
            try:
                found = await discovery.get(
                    self.sys, principal(request), path_id(request, "scan_id")
                )
            except Missing:
                return self.not_found(request, "That scan is not known to this server.")
            scan = to_json(scan_json(found))
        who = principal(request)
        addresses = [str(f["address"]) for f in scan["found"]] if scan else []
        page = DiscoveryPage(
            **self.base(request, "Discovery", "discovery"),
            scan=scan,
            errors=errors or {},
            cidr=cidr,
            registered=await discovery.registered(self.sys, who, addresses),
            history=await discovery.history(self.sys, who),
        )
        return self.render(request, "discovery.html", page, status)

    async def start_discovery(self, request: Request) -> Response:
        form = fields(await request.form())
        cidr = form.get("cidr", "").strip()
        try:
            data = validate(DiscoveryStart, given({"cidr": cidr}))
            scan = await discovery.start(self.sys, principal(request), data.cidr)
        except HandleError as exc:
            return await self.discovery(request, exc.fields, cidr, exc.status)
        return self.back(f"/discovery/{scan.scan_id}")

    async def cancel_discovery(self, request: Request) -> Response:
        scan_id = path_id(request, "scan_id")
        try:
            await discovery.cancel(self.sys, principal(request), scan_id)
        except Missing:
            return self.not_found(request, "That scan is not known to this server.")
        return self.back(f"/discovery/{scan_id}", "Scan cancelled")

    async def register_found(self, request: Request) -> Response:
        scan_id = path_id(request, "scan_id")
        addresses = [str(a) for a in (await request.form()).getlist("address")][:4096]
        if not addresses:
            return self.back(f"/discovery/{scan_id}", "Select at least one agent")
        registered, skipped = 0, []
        for address in addresses:
            try:
                await discovery.register_found(self.sys, principal(request), scan_id, [address])
                registered += 1
            except HandleError as exc:
                skipped.append(f"{address} ({exc.message})")
            except Missing:
                return self.not_found(request, "That scan is not known to this server.")
        note = f"Registered {registered} host(s)"
        if skipped:
            note += f"; not registered: {', '.join(skipped)}"
        return self.back(f"/discovery/{scan_id}", note)

    async def root_ca(self, request: Request) -> Response:
        return Response(
            self.handle.root_ca_pem(),
            media_type="application/x-pem-file",
            headers={"content-disposition": 'attachment; filename="patch-manager-root-ca.crt"'},
        )

    def not_found(self, request: Request, message: str) -> Response:
        return self.templates.TemplateResponse(
            request,
            "error.html",
            {**self.base(request, "Not found", ""), "status": 404, "message": message},
            status_code=404,
        )

    async def save_time_zone(self, request: Request) -> Response:
        form = fields(await request.form())
        try:
            await self.zones.set(self.db, principal(request), form.get("time_zone", ""))
        except HandleError as exc:  # in the banner, and next to the field (profile.html)
            notice = {"notice": f"Time zone not changed: {exc.message}", "time_zone": "refused"}
            return RedirectResponse(f"/profile?{urlencode(notice)}", status_code=303)
        return self.back("/profile", "Time zone saved")

    def routes(self) -> list[Route]:
        routes = [
            Route("/", self.dashboard, methods=["GET"]),
            Route("/hosts", self.hosts, methods=["GET"]),
            Route("/hosts/add", self.add_host, methods=["POST"]),
            Route("/hosts/bulk", self.bulk, methods=["POST"]),
            Route("/hosts/{host_id:int}", self.host, methods=["GET"]),
            Route("/hosts/{host_id:int}/refresh", self.refresh_host, methods=["POST"]),
            Route("/hosts/{host_id:int}/remove", self.remove_host, methods=["POST"]),
            Route("/groups", self.groups, methods=["GET"]),
            Route("/groups", self.create_group, methods=["POST"]),
            Route("/groups/{group_id:int}/rename", self.rename_group, methods=["POST"]),
            Route("/groups/{group_id:int}/delete", self.delete_group, methods=["POST"]),
            Route("/discovery", self.discovery, methods=["GET"]),
            Route("/discovery", self.start_discovery, methods=["POST"]),
            Route("/discovery/{scan_id:int}", self.discovery, methods=["GET"]),
            Route("/discovery/{scan_id:int}/cancel", self.cancel_discovery, methods=["POST"]),
            Route("/discovery/{scan_id:int}/register", self.register_found, methods=["POST"]),
            Route("/ca/root.crt", self.root_ca, methods=["GET"]),
            Route("/profile/time-zone", self.save_time_zone, methods=["POST"]),
        ]
        return [
            Route(r.path, self.zoned(r.endpoint), methods=r.methods, name=r.name) for r in routes
        ]


def host_aside(
    name: str | None, address: Any = None, display_name: str | None = None, port: Any = None
) -> str:
    """A host's secondary text beside its display name (``display_name or name``): the
    registered name when it differs from the display name and from the address, then the
    address (``address:port`` with a port) unless it says the same as what is shown already.
    '' when nothing is left (a demo host's name, display name and address are one address)."""
    shown = display_name or name or ""
    host = "" if address is None else str(address)
    parts = []
    if name and name != shown and name != host:
        parts.append(name)
    if host and (port or host != shown):
        parts.append(f"{host}:{port}" if port else host)
    return " · ".join(parts)


@pass_context
def when(context: Context, value: Any) -> Any:
    """The ``when`` filter: a ``<time>`` in the page's user's time zone, UTC on hover."""
    return time_tag(value, str(context.get("tz") or "UTC"))


def since(value: dt.datetime | None) -> str:
    """'3 min ago' style, for templates."""
    if value is None:
        return "never"
    seconds = (dt.datetime.now(dt.UTC) - value).total_seconds()
    if seconds < 0:
        seconds = -seconds
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"in {int(seconds // size)} {unit}"
        return f"in {int(seconds)} s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
