"""The OpenAPI 3.1 description of the JSON API, served at /api/v1/openapi.json (R-9.5).

Operations are listed here by hand with their request bodies; a test checks that every API
route of the app is described and nothing else.
"""

from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
                "request_id": {"type": "string"},
            },
        }
    },
}
SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "HostCreate": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "FQDN or IP address"},
            "display_name": {"type": "string", "maxLength": 100},
            "groups": {"type": "array", "items": {"type": "string"}},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        },
    },
    "HostIds": {
        "type": "object",
        "required": ["host_ids"],
        "properties": {
            "host_ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "member": {"type": "boolean", "default": True},
        },
    },
    "GroupCreate": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
    },
    "Discovery": {
        "type": "object",
        "required": ["cidr"],
        "properties": {"cidr": {"type": "string", "example": "10.0.0.0/24"}},
    },
    "JobCreate": {
        "type": "object",
        "properties": {
            "kind": {"enum": ["patch", "install", "update", "remove", "reboot"]},
            "host_ids": {"type": "array", "items": {"type": "integer"}},
            "group": {"type": "string"},
            "filter": {"type": "string"},
            "selection": {"enum": ["all", "security", "list"]},
            "packages": {"type": "array", "items": {"type": "string"}},
            "schedule": {"enum": ["window", "now"], "default": "window"},
            "allow_reboot": {"type": "boolean"},
            "reboot_delay_s": {"type": "integer", "minimum": 0},
            "batch_size": {"type": "integer", "minimum": 1},
            "batch_percent": {"type": "integer", "minimum": 1, "maximum": 100},
            "failure_threshold": {"type": "integer", "minimum": 0},
            "canary": {"type": "boolean"},
        },
    },
    "Window": {
        "type": "object",
        "required": ["recurrence", "start_date", "start_time", "duration_minutes", "timezone"],
        "properties": {
            "name": {"type": "string"},
            "host_id": {"type": "integer"},
            "group_id": {"type": "integer"},
            "recurrence": {"enum": ["once", "daily", "weekly", "monthly_day", "monthly_nth"]},
            "start_date": {"type": "string", "format": "date"},
            "start_time": {"type": "string", "example": "02:00"},
            "duration_minutes": {"type": "integer"},
            "timezone": {"type": "string", "example": "Europe/Berlin"},
            "weekdays": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 6}},
            "day_of_month": {"type": "integer"},
            "short_month": {"enum": ["clamp", "skip"]},
            "nth": {"type": "integer"},
            "until": {"type": "string", "format": "date"},
            "enabled": {"type": "boolean"},
            "auto_apply": {"enum": ["none", "all", "security"]},
            "allow_reboot": {"type": "boolean"},
        },
    },
    "Blackout": {
        "type": "object",
        "required": ["starts_at", "ends_at"],
        "properties": {
            "name": {"type": "string"},
            "starts_at": {"type": "string"},
            "ends_at": {"type": "string"},
        },
    },
    "Addresses": {
        "type": "object",
        "required": ["addresses"],
        "properties": {"addresses": {"type": "array", "items": {"type": "string"}}},
    },
}

# (method, path) -> (summary, request schema or None, success status)
OPERATIONS: dict[tuple[str, str], tuple[str, str | None, int]] = {
    ("get", "/api/v1/health"): ("Liveness, database and scheduler heartbeat", None, 200),
    ("get", "/api/v1/hosts"): (
        "Search hosts (group, health, os, min_pending, reboot, q, sort, order, limit, offset/page)",
        None,
        200,
    ),
    ("post", "/api/v1/hosts"): ("Register a host", "HostCreate", 201),
    ("post", "/api/v1/hosts/refresh"): ("Poll the selected hosts now", "HostIds", 202),
    ("get", "/api/v1/hosts/{host_id}"): ("Host detail with live actor state and policy", None, 200),
    ("delete", "/api/v1/hosts/{host_id}"): ("Remove a host (its actor stops)", None, 204),
    ("post", "/api/v1/hosts/{host_id}/refresh"): ("Poll this host now", None, 202),
    ("get", "/api/v1/hosts/{host_id}/patches"): ("Pending patches", None, 200),
    ("get", "/api/v1/hosts/{host_id}/packages"): ("Installed packages (q filters)", None, 200),
    ("get", "/api/v1/hosts/{host_id}/history"): ("Health transitions", None, 200),
    ("get", "/api/v1/hosts/{host_id}/policy"): ("Effective polling policy with sources", None, 200),
    ("get", "/api/v1/actors"): ("Live snapshots of every host actor", None, 200),
    ("get", "/api/v1/fleet/summary"): ("Counts for the dashboard", None, 200),
    ("get", "/api/v1/groups"): ("Groups with host counts", None, 200),
    ("post", "/api/v1/groups"): ("Create a group", "GroupCreate", 201),
    ("patch", "/api/v1/groups/{group_id}"): ("Rename a group", "GroupCreate", 200),
    ("delete", "/api/v1/groups/{group_id}"): ("Delete a group", None, 204),
    ("post", "/api/v1/groups/{group_id}/hosts"): ("Add or remove hosts", "HostIds", 200),
    ("post", "/api/v1/discovery"): ("Start a CIDR discovery scan", "Discovery", 202),
    ("get", "/api/v1/discovery/{scan_id}"): ("Scan progress and results", None, 200),
    ("post", "/api/v1/discovery/{scan_id}/cancel"): ("Cancel a scan", None, 200),
    ("post", "/api/v1/discovery/{scan_id}/register"): ("Register found agents", "Addresses", 201),
    ("get", "/api/v1/openapi.json"): ("This document", None, 200),
    ("get", "/api/v1/jobs"): ("Jobs, newest first (status filters)", None, 200),
    ("post", "/api/v1/jobs"): ("Create a deployment or package/reboot job", "JobCreate", 201),
    ("get", "/api/v1/jobs/{job_id}"): ("Job with its per-host rows", None, 200),
    ("post", "/api/v1/jobs/{job_id}/cancel"): ("Cancel hosts not started yet", None, 200),
    ("post", "/api/v1/jobs/{job_id}/retry"): ("Retry the failed hosts", None, 200),
    ("post", "/api/v1/jobs/{job_id}/rollback"): (
        "Roll back (a new job reinstalling the versions from before)",
        "HostIds",
        201,
    ),
    ("post", "/api/v1/deploy/preview"): (
        "Union of pending patches for a host selection",
        "JobCreate",
        200,
    ),
    ("get", "/api/v1/windows"): ("Maintenance windows", None, 200),
    ("post", "/api/v1/windows"): ("Create a window", "Window", 201),
    ("post", "/api/v1/windows/preview"): ("Next occurrences of a draft window", "Window", 200),
    ("put", "/api/v1/windows/{window_id}"): ("Replace a window", "Window", 200),
    ("delete", "/api/v1/windows/{window_id}"): ("Delete a window", None, 204),
    ("get", "/api/v1/calendar"): ("Window occurrences of the next days (days=30)", None, 200),
    ("get", "/api/v1/blackouts"): ("Blackout periods", None, 200),
    ("post", "/api/v1/blackouts"): ("Create a blackout period", "Blackout", 201),
    ("delete", "/api/v1/blackouts/{blackout_id}"): ("Delete a blackout", None, 204),
}


def document(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for (method, path), (summary, body, status) in OPERATIONS.items():
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): {"description": "success"},
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "integer"}}
                for p in params
            ]
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}
                },
            }
        if method != "get":
            operation["parameters"] = [
                *operation.get("parameters", []),
                {
                    "name": "X-CSRF-Token",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Linux Patch Manager API", "version": version},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "pm_session"}
            },
        },
        "security": [{"session": []}],
        "paths": paths,
    }
