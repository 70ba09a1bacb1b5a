"""The simulated agent's endpoints (agent-api.md §3), with actix-web's framework answers."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .catalog import requires_reboot
from .families import Pkg
from .http import Request, Response, WebSocketAccept, is_websocket_upgrade, text
from .model import Op, SimJob, St, rfc3339, wall_now

if TYPE_CHECKING:
    from .agent import SimAgent

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:~_-]{0,255}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
SELF = "linux-patch-api"


class AdmissionError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class BadRequest(Exception):
    """actix-web's own text/plain 400 (before any handler code runs)."""


def envelope(data: Any, status: int = 200) -> Response:
    body = {"success": True, "request_id": str(uuid.uuid4()), "timestamp": rfc3339(wall_now()),
            "data": data, "error": None}  # fmt: skip
    return Response(status, json.dumps(body).encode(), "application/json")


def error(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    retryable: bool = False,
    retry_after: int | None = None,
) -> Response:
    body = {
        "success": False, "request_id": str(uuid.uuid4()), "timestamp": rfc3339(wall_now()),
        "data": None,
        "error": {"code": code, "message": message, "details": details, "retryable": retryable},
    }  # fmt: skip
    headers = [("retry-after", str(retry_after))] if retry_after is not None else []
    return Response(status, json.dumps(body).encode(), "application/json", headers)


def _validation(what: str) -> Response:
    return error(400, "VALIDATION_ERROR", f"Invalid {what}", retryable=False)


def json_body(request: Request) -> dict[str, Any]:
    ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest("Content type error")
    if not request.body:
        raise BadRequest("Json deserialize error: EOF while parsing a value at line 1 column 0")
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        raise BadRequest(f"Json deserialize error: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("Json deserialize error: invalid type: expected struct")
    return data


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if value is None or value is default:
        return value
    if isinstance(value, bool) and kind is int:
        raise BadRequest(f"Json deserialize error: invalid type: boolean, expected {key}")
    if not isinstance(value, kind):
        raise BadRequest(f"Json deserialize error: invalid type for `{key}`")
    return value


def _query(request: Request, key: str) -> str | None:
    values = request.query.get(key)
    return values[-1] if values else None


def _accepted(job: SimJob, **extra: Any) -> Response:
    data = {"job_id": job.job_id, "status": "pending", "operation": job.op.accepted, **extra}
    return envelope(data, 202)


# -- handlers --------------------------------------------------------------------------------


async def health(agent: SimAgent, request: Request, _: str) -> Response:
    return envelope(agent.health_data())


async def system_info(agent: SimAgent, request: Request, _: str) -> Response:
    if agent.faults.server_error:
        return error(500, "SYSTEM_INFO_ERROR", "Failed to read system information", retryable=True)
    p = agent.profile
    return envelope({
        "hostname": p.hostname, "os": p.os, "os_version": p.os_version, "kernel": p.kernel,
        "architecture": "x86_64", "last_update_check": None, "last_update_apply": None,
        "pending_reboot": agent.pending_reboot,
        "package_db_clean": agent.faults.package_db_clean,
    })  # fmt: skip


async def service(agent: SimAgent, request: Request, name: str) -> Response:
    if not name or "/" in name or ".." in name:
        return error(400, "INVALID_SERVICE_NAME", "Invalid service name")
    known = {"sshd", "ssh", "cron", "crond", "nginx", "linux-patch-api", "systemd-journald"}
    if name not in known:
        return error(404, "SERVICE_NOT_FOUND", f"Service '{name}' not found")
    return envelope({"name": name, "display_name": name, "active_state": "active",
                     "sub_state": "running", "load_state": "loaded", "enabled_state": "enabled",
                     "main_pid": 1000 + len(name), "healthy": True})  # fmt: skip


def _package(agent: SimAgent, name: str, *, named: bool = False) -> dict[str, Any]:
    """A package as list calls report it: most fields empty. Without a name (``apt list
    --installed``) never upgradable (§3.5: the apt parser reads ``[installed,upgradable to: X]``
    as plain installed); an apt name query (``apt list <name>``) prints an upgradable package's
    candidate line, ``[upgradable from: Y]``, read as Upgradable at the new version."""
    p = agent.profile
    version = p.installed.get(name)
    status, upgradable = "Installed", False
    if version is None:  # a repository package, listed by an apt name query
        version, status = p.candidate(name) or "", "Available"
    elif named and p.family == "apt" and name in p.upgradable:
        version, status, upgradable = p.upgradable[name], "Upgradable", True
    # Only the apt parser fills latest_version in list entries.
    latest = version if p.family == "apt" else None
    return {"name": name, "version": version, "status": status, "upgradable": upgradable,
            "latest_version": latest, "description": "", "dependencies": [],
            "reverse_dependencies": [], "install_date": None,
            "size_installed": None}  # fmt: skip


def _matching(agent: SimAgent, pattern: str) -> list[str] | None:
    """What the backend's name query returns (§3.5); None when the command fails. apt
    (``apt list <name>``) matches the pattern as a glob against installed and repository
    packages; apk (``apk list --installed <name>``) as a glob against installed ones; the rpm
    backends (``rpm -qa <name>`` then names *containing* it) only see installed packages, and a
    glob pattern matches nothing there since no name contains ``*``; pacman (``pacman -Q
    <name>``) takes an exact installed name and exits 1 when nothing matches."""
    p = agent.profile
    if p.family == "apt":
        names = set(p.installed) | set(p.repo)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if p.family == "apk":
        return [n for n in p.installed if fnmatch.fnmatchcase(n, pattern)]
    if p.family == "pacman":
        return [pattern] if pattern in p.installed else None
    return [n for n in p.installed if fnmatch.fnmatchcase(n, pattern) and pattern in n]


async def list_packages(agent: SimAgent, request: Request, _: str) -> Response:
    upgradable = _query(request, "upgradable")
    if upgradable is not None and upgradable not in ("true", "false"):
        raise BadRequest("Query deserialize error: provided string was not `true` or `false`")
    if agent.faults.server_error:
        return error(500, "PKG_MANAGER_ERROR", "Package manager failed", retryable=True)
    name = _query(request, "name")
    # Without a name only installed packages are listed; limit/offset are ignored.
    names = _matching(agent, name) if name else list(agent.profile.installed)
    if names is None:
        return error(500, "PKG_MANAGER_ERROR", f"Failed to list packages: error: package "
                     f"'{name}' was not found", retryable=True)  # fmt: skip
    packages = [_package(agent, n, named=bool(name)) for n in names]
    status = _query(request, "status") or ""
    wanted = {"installed": "Installed", "available": "Available"}.get(status)
    if wanted is not None:
        packages = [x for x in packages if x["status"] == wanted]
    if upgradable == "true" or status == "upgradable":
        packages = [x for x in packages if x["upgradable"]]  # without a name: the quirk above
    sort = _query(request, "sort")
    key = sort if sort in ("version", "status") else "name"
    descending = (_query(request, "order") or "asc") != "asc"  # anything but asc descends
    packages.sort(key=lambda x: (x[key], x["name"]), reverse=descending)
    return envelope({"packages": packages, "total": len(packages)})


async def get_package(agent: SimAgent, request: Request, name: str) -> Response:
    """§3.6: the detail fills description (first line), dependencies, size and the upgrade."""
    if not _NAME.match(name):
        return _validation("package name")
    if agent.faults.server_error:
        return error(500, "PKG_MANAGER_ERROR", "Package manager failed", retryable=True)
    p = agent.profile
    if not p.knows(name):
        return error(404, "PKG_NOT_FOUND", f"Package '{name}' not found")
    data = _package(agent, name)
    entry = p.entry(name)
    if name in p.installed and entry is not None:
        data.update(_detail_fields(agent, entry))
        data["latest_version"] = data["version"]
    elif entry is not None and p.family in ("dnf", "pacman"):  # dnf info / pacman -Si
        data["description"] = entry.description
    if name in p.upgradable:  # the backends' detail says Installed, with the upgrade
        data.update(upgradable=True, latest_version=p.upgradable[name])
    return envelope(data)


def _installed_at(name: str) -> dt.datetime:
    """When the simulated host installed ``name`` (a fixed date a package)."""
    offset = zlib.crc32(name.encode()) % (200 * 86400)
    return dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=offset)


def _detail_fields(agent: SimAgent, entry: Pkg) -> dict[str, Any]:
    """An installed package's detail in each backend's format (§3.6): apt ``apt-cache show``
    (size in KB), dnf ``rpm -qi``/``rpm -qR`` (raw bytes, the install date cut at its first
    colon by the parser, requirements as rpm capabilities), apk ``apk info`` (bytes; its
    dependency parser never matches), pacman ``pacman -Qi`` (KiB/MiB, the full date, Required
    By)."""
    p = agent.profile
    size = entry.size_kb * 1024
    stamp = _installed_at(entry.name).strftime("%a %d %b %Y %I:%M:%S %p UTC")
    dependents = sorted(
        n for n in p.installed if (e := p.entry(n)) is not None and entry.name in e.dependencies
    )
    if p.family == "dnf":
        return {"description": entry.description, "size_installed": str(size),
                "install_date": stamp.split(":")[0],
                "dependencies": [f"{d}(x86-64)" for d in entry.dependencies]}  # fmt: skip
    if p.family == "apk":
        return {"description": entry.description, "size_installed": f"{size} bytes",
                "reverse_dependencies": dependents}  # fmt: skip
    if p.family == "pacman":
        human = (f"{entry.size_kb:.2f} KiB" if entry.size_kb < 1024
                 else f"{entry.size_kb / 1024:.2f} MiB")  # fmt: skip
        return {"description": entry.description, "size_installed": human,
                "install_date": stamp, "dependencies": list(entry.dependencies),
                "reverse_dependencies": dependents}  # fmt: skip
    return {"description": entry.description, "dependencies": list(entry.dependencies),
            "size_installed": f"{entry.size_kb} KB"}  # fmt: skip


async def install(agent: SimAgent, request: Request, _: str) -> Response:
    body = json_body(request)
    if "packages" not in body:
        raise BadRequest("Json deserialize error: missing field `packages`")
    items = body["packages"]
    if not isinstance(items, list):
        raise BadRequest("Json deserialize error: invalid type: expected a sequence")
    options = body.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("Json deserialize error: invalid type for `options`")
        for key in ("force", "no_recommends"):
            if key not in options:
                raise BadRequest(f"Json deserialize error: missing field `{key}`")
    versions: dict[str, str | None] = {}
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            raise BadRequest("Json deserialize error: missing field `name`")
        name, version = item["name"], item.get("version")
        if not isinstance(name, str) or not _NAME.match(name):
            return _validation("package name")
        if version is not None and (not isinstance(version, str) or not _VERSION.match(version)):
            return _validation("version")
        versions[name] = version
    job = agent.admit(SimJob(Op.INSTALL, list(versions), versions=versions))
    return _accepted(job, packages=list(versions), package=None)


async def update_package(agent: SimAgent, request: Request, name: str) -> Response:
    if not _NAME.match(name):
        return _validation("package name")
    if name == SELF:
        return self_update(agent)
    job = agent.admit(SimJob(Op.UPDATE, [name]))
    return _accepted(job, packages=None, package=name)


def self_update(agent: SimAgent) -> Response:
    if agent.self_update_active:
        return error(409, "SELF_UPDATE_IN_PROGRESS", "Self-update already running",
                     retryable=True, retry_after=60)  # fmt: skip
    active = [j for j in agent.jobs.values() if not j.internal and j.status.active]
    if active:
        return error(409, "SELF_UPDATE_BLOCKED", "Active jobs block the self-update",
                     details={"running_jobs": len(active)}, retryable=True,
                     retry_after=60)  # fmt: skip
    candidate = agent.profile.upgradable.get(SELF)
    if candidate is None:
        return error(200, "NO_UPDATE_AVAILABLE", "No update available", retryable=False)
    job = agent.admit(SimJob(Op.SELF_UPDATE, [SELF]))
    agent.self_update_active = True

    async def finish() -> None:
        agent.profile.installed[SELF] = agent.profile.upgradable.pop(SELF)
        agent.version = agent.profile.installed[SELF].split("-")[0]
        await agent.restart(reboot=False)

    assert agent._nursery is not None
    agent._nursery.start_soon(finish)
    return _accepted(job, packages=None, package=SELF)


async def remove_package(agent: SimAgent, request: Request, name: str) -> Response:
    if not _NAME.match(name):
        return _validation("package name")
    job = agent.admit(SimJob(Op.REMOVE, [name]))
    return _accepted(job, packages=None, package=name)


async def patches(agent: SimAgent, request: Request, _: str) -> Response:
    if agent.faults.server_error:
        return error(500, "PKG_MANAGER_ERROR", "Package manager failed", retryable=True)
    stale = (wall_now() - agent.last_cache_update).total_seconds() > 900 * agent.time_scale
    if stale and not agent.reboot_reserved:
        agent.start_internal_refresh("patch_list")
    return envelope(agent.patch_data())


async def apply_patches(agent: SimAgent, request: Request, _: str) -> Response:
    body = json_body(request)
    names = body.get("packages")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise BadRequest("Json deserialize error: invalid type for `packages`")
    for name in names or []:
        if not _NAME.match(name):
            return _validation("package name")
    allow_reboot = body.get("allow_reboot", body.get("reboot", False))
    if not isinstance(allow_reboot, bool):
        raise BadRequest("Json deserialize error: invalid type for `allow_reboot`")
    delay = _field(body, "reboot_delay_seconds", int, 0) or 0
    job = SimJob(Op.PATCH_APPLY, list(names or []), apply_all=names is None,
                 allow_reboot=allow_reboot, reboot_delay_seconds=delay)  # fmt: skip
    agent.admit(job)
    return _accepted(job, packages=[f"{len(names or [])} packages"], package=None)


async def reboot(agent: SimAgent, request: Request, _: str) -> Response:
    body = json_body(request)
    delay = _field(body, "delay_seconds", int, 0) or 0
    force = bool(_field(body, "force", bool, False))
    ack = bool(_field(body, "acknowledge_package_database_corruption_risk", bool, False))
    job = SimJob(Op.REBOOT, [], reboot_delay_seconds=delay)
    agent.admit_reboot(job, force=force, acknowledge=ack)
    data = {"job_id": job.job_id, "status": "pending", "operation": "reboot",
            "scheduled_at": rfc3339(wall_now()), "delay_seconds": delay,
            "force": force}  # fmt: skip
    return envelope(data, 202)


async def list_jobs(agent: SimAgent, request: Request, _: str) -> Response:
    limit_text = _query(request, "limit")
    try:
        limit = int(limit_text) if limit_text is not None else 50
    except ValueError:
        raise BadRequest("Query deserialize error: invalid digit found in string") from None
    wanted = (_query(request, "status") or "").lower()
    valid = {s.rest for s in St if s is not St.REBOOTING}
    jobs = sorted(agent.jobs.values(), key=lambda j: j.created_at, reverse=True)
    if wanted in valid:
        jobs = [j for j in jobs if j.status.rest == wanted]
    jobs = jobs[: max(0, limit)]
    return envelope({"jobs": [j.summary() for j in jobs], "total": len(jobs)})


def _job_or_error(agent: SimAgent, job_id: str) -> SimJob | Response:
    if not _UUID.match(job_id):
        return error(400, "INVALID_JOB_ID", f"Invalid job id: {job_id}")
    job = agent.jobs.get(job_id.lower())
    if job is None:
        return error(404, "JOB_NOT_FOUND", f"Job {job_id} not found")
    return job


async def get_job(agent: SimAgent, request: Request, job_id: str) -> Response:
    job = _job_or_error(agent, job_id)
    return job if isinstance(job, Response) else envelope(job.detail())


async def delete_job(agent: SimAgent, request: Request, job_id: str) -> Response:
    job = _job_or_error(agent, job_id)
    if isinstance(job, Response):
        return job
    if not job.status.terminal:
        return error(409, "DELETE_NOT_ALLOWED", "Only finished jobs can be deleted",
                     details={"job_id": job.job_id, "status": job.status.rest})  # fmt: skip
    del agent.jobs[job.job_id]
    return envelope({"deleted": True, "job_id": job.job_id})


async def rollback(agent: SimAgent, request: Request, job_id: str) -> Response:
    if agent.self_update_active:
        return error(409, "SELF_UPDATE_IN_PROGRESS", "Self-update in progress",
                     retryable=True, retry_after=60)  # fmt: skip
    if not _UUID.match(job_id):
        return error(400, "INVALID_JOB_ID", f"Invalid job id: {job_id}")
    original = agent.jobs.get(job_id.lower())
    if original is None or original.status not in (St.FAILED, St.COMPLETED):
        return error(400, "ROLLBACK_NOT_ALLOWED", "Rollback not allowed for this job",
                     details={"job_id": job_id})  # fmt: skip
    # The rollback job is queued and never executed (§3.14).
    job = agent.admit(SimJob(Op.ROLLBACK, list(original.packages), rollback_job_id=job_id))
    data = {"job_id": job.job_id, "status": "pending", "operation": "rollback",
            "original_job_id": job_id, "exclusive_mode": True}  # fmt: skip
    return envelope(data, 202)


async def websocket(agent: SimAgent, request: Request, _: str) -> Response | WebSocketAccept:
    if not is_websocket_upgrade(request):
        return text(400, "WebSocket upgrade expected")
    if agent.ws_refusal:  # a proxy or an overloaded agent refusing the upgrade (tests)
        return text(agent.ws_refusal, "WebSocket upgrade refused")
    return WebSocketAccept()


Handler = Callable[["SimAgent", Request, str], Awaitable["Response | WebSocketAccept"]]

ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/health$"), health),
    ("GET", re.compile(r"^/api/v1/health$"), health),
    ("GET", re.compile(r"^/api/v1/system/info$"), system_info),
    ("GET", re.compile(r"^/api/v1/system/services/([^/]*)$"), service),
    ("POST", re.compile(r"^/api/v1/system/reboot$"), reboot),
    ("GET", re.compile(r"^/api/v1/packages$"), list_packages),
    ("POST", re.compile(r"^/api/v1/packages$"), install),
    ("GET", re.compile(r"^/api/v1/packages/([^/]+)$"), get_package),
    ("PUT", re.compile(r"^/api/v1/packages/([^/]+)$"), update_package),
    ("DELETE", re.compile(r"^/api/v1/packages/([^/]+)$"), remove_package),
    ("GET", re.compile(r"^/api/v1/patches$"), patches),
    ("POST", re.compile(r"^/api/v1/patches/apply$"), apply_patches),
    ("GET", re.compile(r"^/api/v1/jobs$"), list_jobs),
    ("GET", re.compile(r"^/api/v1/jobs/([^/]+)$"), get_job),
    ("DELETE", re.compile(r"^/api/v1/jobs/([^/]+)$"), delete_job),
    ("POST", re.compile(r"^/api/v1/jobs/([^/]+)/rollback$"), rollback),
    ("GET", re.compile(r"^/api/v1/ws/jobs$"), websocket),
]


async def route(agent: SimAgent, request: Request) -> Response | WebSocketAccept:
    for method, pattern, handler in ROUTES:
        match = pattern.match(request.path)
        if match and method == request.method:
            try:
                return await handler(agent, request, match.group(1) if match.groups() else "")
            except BadRequest as exc:
                return text(400, str(exc))
            except AdmissionError as exc:
                return exc.response
    if request.path.startswith("/api/v1/"):
        return Response(405, headers=[("allow", "GET, POST, PUT, DELETE")])
    return Response(404)


__all__ = ["ROUTES", "AdmissionError", "envelope", "error", "requires_reboot", "route"]
