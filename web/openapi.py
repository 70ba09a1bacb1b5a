"""The OpenAPI 3.1 description of the JSON API, served at /api/v1/openapi.json (R-9.5).

Generated from the typed models of ``web.models``: request bodies, query parameters, success
responses and the error envelope. The table below only says which model goes where; a test
checks that every API route of the app is described and nothing else.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import audit_models as aud
from . import models as m
from . import notifications_api as nta
from . import pki_models as pki
from . import report_models as rmo
from . import sso_api as sso
from . import tokens_api as tok

_REPORT_FILES = ("text/csv", "application/pdf")


class Operation(NamedTuple):
    summary: str
    status: int
    reply: type[BaseModel] | None  # None: no body (204)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body_optional: bool = False
    files: tuple[str, ...] = ()  # other media types of the success response (CSV, PDF, ZIP)


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/api/v1/health"): Operation("Liveness (details only with a session)", 200, m.Health),
    ("get", "/api/v1/hosts"): Operation("Search hosts", 200, m.HostList, query=m.HostQuery),
    ("post", "/api/v1/hosts"): Operation("Register a host", 201, m.HostOut, m.HostCreate),
    ("post", "/api/v1/hosts/refresh"): Operation(
        "Poll the selected hosts now", 202, m.Refreshing, m.HostIds
    ),
    ("get", "/api/v1/hosts/{host_id}"): Operation(
        "Host detail with live actor state and policy", 200, m.HostDetail
    ),
    ("delete", "/api/v1/hosts/{host_id}"): Operation("Remove a host (its actor stops)", 204, None),
    ("post", "/api/v1/hosts/{host_id}/refresh"): Operation("Poll this host now", 202, m.Refreshing),
    ("get", "/api/v1/hosts/{host_id}/patches"): Operation("Pending patches", 200, m.Patches),
    ("get", "/api/v1/hosts/{host_id}/packages"): Operation(
        "Installed packages (q: literal text in the name)", 200, m.Packages, query=m.PackageQuery
    ),
    ("get", "/api/v1/hosts/{host_id}/history"): Operation("Health transitions", 200, m.History),
    ("get", "/api/v1/hosts/{host_id}/policy"): Operation(
        "Effective polling policy with sources", 200, m.Policy
    ),
    ("get", "/api/v1/actors"): Operation("Live snapshots of every host actor", 200, m.Actors),
    ("get", "/api/v1/fleet/summary"): Operation("Counts for the dashboard", 200, m.FleetSummary),
    ("get", "/api/v1/groups"): Operation("Groups with host counts", 200, m.Groups),
    ("post", "/api/v1/groups"): Operation("Create a group", 201, m.Group, m.GroupCreate),
    ("patch", "/api/v1/groups/{group_id}"): Operation(
        "Rename a group", 200, m.GroupRenamed, m.GroupRename
    ),
    ("delete", "/api/v1/groups/{group_id}"): Operation("Delete a group", 204, None),
    ("post", "/api/v1/groups/{group_id}/hosts"): Operation(
        "Add or remove hosts", 200, m.Changed, m.GroupMembership
    ),
    ("post", "/api/v1/discovery"): Operation(
        "Start a CIDR discovery scan", 202, m.Scan, m.DiscoveryStart
    ),
    ("get", "/api/v1/discovery/{scan_id}"): Operation("Scan progress and results", 200, m.Scan),
    ("post", "/api/v1/discovery/{scan_id}/cancel"): Operation(
        "Cancel a scan", 200, m.ScanCancelled
    ),
    ("post", "/api/v1/discovery/{scan_id}/register"): Operation(
        "Register found agents", 201, m.Registered, m.Addresses
    ),
    ("get", "/api/v1/openapi.json"): Operation("This document", 200, m.Document),
    ("get", "/api/v1/admin/notifications"): Operation(
        "SMTP and notification settings (admins)", 200, nta.NotificationSettingsOut
    ),
    ("put", "/api/v1/admin/notifications"): Operation(
        "Change the SMTP and notification settings (admins)",
        200,
        nta.NotificationSettingsOut,
        nta.NotificationSettingsIn,
    ),
    ("post", "/api/v1/admin/notifications/test"): Operation(
        "Send a test message now (admins)", 200, nta.TestResult, nta.TestMessage
    ),
    ("get", "/api/v1/admin/notifications/outbox"): Operation(
        "Outbox depth, last error, recent messages (admins)", 200, nta.Outbox
    ),
    ("get", "/api/v1/profile/notifications"): Operation(
        "Your e-mail address and subscribed events", 200, nta.SubscriptionOut
    ),
    ("put", "/api/v1/profile/notifications"): Operation(
        "Set your e-mail address and events", 200, nta.SubscriptionOut, nta.SubscriptionIn
    ),
    ("put", "/api/v1/admin/log-level"): Operation(
        "Set the log level now (admins)", 200, nta.LogLevelOut, nta.LogLevelIn
    ),
    ("get", "/api/v1/jobs"): Operation("Jobs, newest first", 200, m.Jobs, query=m.JobsQuery),
    ("post", "/api/v1/jobs"): Operation(
        "Create a deployment or package/reboot job (a group or filter that matches every host"
        " needs all_hosts: true)",
        201,
        m.JobCreated,
        m.JobCreate,
    ),
    ("get", "/api/v1/jobs/{job_id}"): Operation("Job with its per-host rows", 200, m.JobDetail),
    ("post", "/api/v1/jobs/{job_id}/cancel"): Operation(
        "Cancel hosts not started yet", 200, m.JobsCancelled
    ),
    ("post", "/api/v1/jobs/{job_id}/retry"): Operation("Retry the failed hosts", 200, m.Retrying),
    ("post", "/api/v1/jobs/{job_id}/rollback"): Operation(
        "Roll back (a new job reinstalling the versions from before)",
        201,
        m.RollbackCreated,
        m.Rollback,
        body_optional=True,
    ),
    ("post", "/api/v1/deploy/preview"): Operation(
        "Hosts a selection resolves to and the union of their pending patches",
        200,
        m.Preview,
        m.DeployPreview,
    ),
    ("post", "/api/v1/jobs/plan"): Operation(
        "The plan of a draft job: per host the package changes, reboot, skip reason, batch and"
        " window (what POST /api/v1/jobs stores)",
        200,
        m.DeployPlan,
        m.JobCreate,
    ),
    ("get", "/api/v1/windows"): Operation("Maintenance windows", 200, m.Windows),
    ("post", "/api/v1/windows"): Operation("Create a window", 201, m.Created, m.Window),
    ("post", "/api/v1/windows/preview"): Operation(
        "Next occurrences of a draft window", 200, m.Occurrences, m.WindowDraft
    ),
    ("put", "/api/v1/windows/{window_id}"): Operation("Replace a window", 200, m.Created, m.Window),
    ("delete", "/api/v1/windows/{window_id}"): Operation("Delete a window", 204, None),
    ("get", "/api/v1/calendar"): Operation(
        "Window occurrences of the next days", 200, m.Calendar, query=m.CalendarQuery
    ),
    ("get", "/api/v1/blackouts"): Operation("Blackout periods", 200, m.Blackouts),
    ("post", "/api/v1/blackouts"): Operation(
        "Create a blackout period (a time without a zone is UTC)", 201, m.Created, m.BlackoutCreate
    ),
    ("delete", "/api/v1/blackouts/{blackout_id}"): Operation("Delete a blackout", 204, None),
    ("get", "/api/v1/pki/crl.pem"): Operation(
        "The current CRL, PEM (no session: agents fetch it)", 200, None
    ),
    ("post", "/api/v1/enroll"): Operation(
        "An agent asks to enrol (no session); 409 when registered, 429 once a minute per address",
        202,
        pki.EnrolAccepted,
        pki.EnrolRequest,
    ),
    ("get", "/api/v1/enroll/status/{token}"): Operation(
        "An enrolling agent polls (no session): pending, denied, notfound or approved + files",
        200,
        pki.EnrolStatus,
    ),
    ("get", "/api/v1/enrolments"): Operation(
        "Enrolment requests, newest first", 200, pki.Enrolments
    ),
    ("post", "/api/v1/enrolments/{enrolment_id}/approve"): Operation(
        "Approve: register the host (optional group), the agent gets its certificate",
        200,
        pki.EnrolmentOut,
        pki.Approve,
        body_optional=True,
    ),
    ("post", "/api/v1/enrolments/{enrolment_id}/deny"): Operation(
        "Deny an enrolment request", 200, pki.EnrolmentOut
    ),
    ("get", "/api/v1/pki/repo-config"): Operation(
        "The repository configuration for an agent's distribution (no session), a bare object",
        200,
        pki.RepoConfig,
        query=pki.RepoConfigQuery,
    ),
    ("get", "/api/v1/repo-configs"): Operation(
        "Repository configurations per distribution", 200, pki.RepoConfigs
    ),
    ("post", "/api/v1/repo-configs"): Operation(
        "Create or replace the repository configuration of a distribution",
        200,
        pki.RepoConfig,
        pki.RepoConfig,
    ),
    ("post", "/api/v1/repo-configs/delete"): Operation(
        "Delete the repository configuration of a distribution", 204, None, pki.DistroId
    ),
    ("get", "/api/v1/certificates"): Operation(
        "Every certificate the CA issued, and seconds to expiry of those in use",
        200,
        pki.Certificates,
    ),
    ("post", "/api/v1/certificates/renew"): Operation(
        "Renew the manager's client or web certificate now (used at once)",
        200,
        pki.Renewed,
        pki.RenewRequest,
    ),
    ("post", "/api/v1/certificates/revoke"): Operation(
        "Revoke an agent certificate (CRL re-signed; the manager refuses it at once)",
        200,
        pki.Revoked,
        pki.RevokeRequest,
    ),
    ("get", "/api/v1/users"): Operation("Users (admins)", 200, m.Users),
    ("post", "/api/v1/users"): Operation(
        "Create a user with a one-time password (changed at the first login)",
        201,
        m.UserCreated,
        m.UserCreate,
    ),
    ("get", "/api/v1/users/{user_id}"): Operation("A user (admins, or oneself)", 200, m.UserOut),
    ("patch", "/api/v1/users/{user_id}"): Operation(
        "Change role, groups or state (the user's sessions end)", 200, m.UserOut, m.UserUpdate
    ),
    ("post", "/api/v1/users/{user_id}/unlock"): Operation(
        "Unlock after too many wrong passwords", 200, m.UserOut
    ),
    ("post", "/api/v1/users/{user_id}/reset-password"): Operation(
        "Set a one-time password (sessions end)", 200, m.PasswordReset
    ),
    ("post", "/api/v1/users/{user_id}/reset-mfa"): Operation(
        "Remove a user's second factors (sessions end; the next login enrols again)",
        200,
        m.SessionsRevoked,
    ),
    ("get", "/api/v1/users/{user_id}/sessions"): Operation(
        "Live sessions (admins, or oneself)", 200, m.Sessions
    ),
    ("delete", "/api/v1/users/{user_id}/sessions"): Operation(
        "End every session of a user", 200, m.SessionsRevoked
    ),
    ("delete", "/api/v1/users/{user_id}/sessions/{session_id}"): Operation(
        "End one session (admins, or oneself)", 204, None
    ),
    ("post", "/api/v1/profile/password"): Operation(
        "Change one's own password (other sessions end; this one gets a new cookie)",
        204,
        None,
        m.PasswordChange,
    ),
    ("get", "/api/v1/reports/compliance"): Operation(
        "Compliance report: summary, trend, hosts, waivers (format=json|csv|pdf)",
        200,
        rmo.ComplianceOut,
        query=rmo.ReportQuery,
        files=_REPORT_FILES,
    ),
    ("get", "/api/v1/reports/patch-history"): Operation(
        "Patch history: every host job, mean time to remediate per severity",
        200,
        rmo.HistoryOut,
        query=rmo.ReportQuery,
        files=_REPORT_FILES,
    ),
    ("get", "/api/v1/reports/exposure"): Operation(
        "Vulnerability exposure: pending security patches by severity and age",
        200,
        rmo.ExposureOut,
        query=rmo.ReportQuery,
        files=_REPORT_FILES,
    ),
    ("get", "/api/v1/reports/reboots"): Operation(
        "Hosts needing a reboot",
        200,
        rmo.RebootsOut,
        query=rmo.ReportQuery,
        files=_REPORT_FILES,
    ),
    ("get", "/api/v1/reports/evidence"): Operation(
        "Auditor evidence pack (ZIP with a SHA-256 manifest)",
        200,
        None,
        query=rmo.EvidenceQuery,
        files=("application/zip",),
    ),
    ("get", "/api/v1/waivers"): Operation("Risk waivers", 200, rmo.WaiversOut),
    ("post", "/api/v1/waivers"): Operation(
        "Record a risk waiver (admins and operators)", 201, rmo.WaiverCreated, rmo.WaiverCreate
    ),
    ("post", "/api/v1/waivers/{waiver_id}/revoke"): Operation("Revoke a waiver", 204, None),
    ("get", "/api/v1/report-definitions"): Operation(
        "Scheduled report definitions (stored for download)", 200, rmo.Definitions
    ),
    ("post", "/api/v1/report-definitions"): Operation(
        "Store a scheduled report definition", 201, m.Created, rmo.DefinitionCreate
    ),
    ("delete", "/api/v1/report-definitions/{definition_id}"): Operation(
        "Delete a report definition", 204, None
    ),
    # -- the audit log (web.audit_api) --
    ("get", "/api/v1/audit"): Operation(
        "Audit entries, newest first (admins and auditors)",
        200,
        aud.AuditList,
        query=aud.AuditQuery,
    ),
    ("get", "/api/v1/audit/export"): Operation(
        "The matching audit entries as CSV, oldest first, streamed",
        200,
        None,
        query=aud.AuditFilters,
        files=("text/csv",),
    ),
    ("post", "/api/v1/audit/verify"): Operation(
        "Verify the audit chain now (the first broken entry is named)",
        200,
        aud.AuditVerification,
        aud.AuditVerify,
        body_optional=True,
    ),
    ("get", "/api/v1/report-definitions/{definition_id}/download"): Operation(
        "Run a stored definition now (its report and format, the caller's scope)",
        200,
        None,
        files=("application/json", *_REPORT_FILES),
    ),
    # -- API tokens and the access-JWT exchange (web.tokens_api) --
    ("get", "/api/v1/tokens"): Operation(
        "Your API tokens (all=true: everyone's, admins)", 200, tok.TokenList, query=tok.TokenQuery
    ),
    ("post", "/api/v1/tokens"): Operation(
        "Create an API token (its secret is in this answer only)",
        201,
        tok.TokenCreated,
        tok.TokenCreate,
    ),
    ("delete", "/api/v1/tokens/{token_id}"): Operation(
        "Revoke an API token (yours; admins: anyone's)", 204, None
    ),
    ("post", "/api/v1/auth/token"): Operation(
        "Exchange an API token or a refresh token for a 15-minute access JWT (no session)",
        200,
        tok.TokenGrant,
        tok.TokenGrantRequest,
    ),
    ("get", "/api/v1/auth/jwks.json"): Operation(
        "Public keys that verify access JWTs (no session)", 200, tok.Jwks
    ),
    # -- single sign-on identities of a user (web.sso_api; admins) --
    ("get", "/api/v1/users/{user_id}/sso-identities"): Operation(
        "A user's SSO identities (admins)", 200, sso.SsoIdentities
    ),
    ("post", "/api/v1/users/{user_id}/sso-identities"): Operation(
        "Link an SSO identity to a user (admins; never done by e-mail)",
        201,
        sso.SsoIdentityOut,
        sso.SsoIdentityLink,
    ),
    ("post", "/api/v1/users/{user_id}/sso-identities/unlink"): Operation(
        "Unlink an SSO identity from a user (admins)",
        200,
        sso.SsoIdentityUnlinked,
        sso.SsoIdentityLink,
    ),
}

# Requests without a session, hence without a CSRF token.
NO_SESSION = frozenset({"/api/v1/auth/token"})

# Path parameters that are not ids.
STRING_PARAMS: dict[str, dict[str, Any]] = {"token": {"type": "string", "maxLength": 128}}

ERRORS = {
    "400": "malformed JSON, or nested too deeply",
    "401": "no session",
    "403": "CSRF token missing or wrong",
    "404": "no such resource",
    "409": "conflict with the current state",
    "413": "body too large",
    "415": "not a JSON body",
    "422": "invalid fields: details.fields names each",
    "429": "too many at once; try again later",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation_id(method: str, path: str) -> str:
    """``post_discovery_scan_id_register`` for ``POST /api/v1/discovery/{scan_id}/register``."""
    return re.sub(r"[^a-z0-9]+", "_", f"{method} {path.removeprefix('/api/v1/')}").strip("_")


# A time of day as served and accepted ("02:00", "02:00:00", "02:00:00.5"). Not ``format: time``:
# OpenAPI/JSON Schema mean RFC 3339's full-time, which needs an offset our times do not have.
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"


def _times_of_day_as_patterns(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("format") == "time" and node.get("type") == "string":
            del node["format"]
            node["pattern"] = TIME_OF_DAY
            node.setdefault("examples", ["02:00"])
        for value in node.values():
            _times_of_day_as_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _times_of_day_as_patterns(value)


@cache
def document(version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(m.Error, "serialization")]
    for op in OPERATIONS.values():
        if op.reply is not None:
            models.append((op.reply, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    keys, schemas = models_json_schema(
        list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
    )
    _times_of_day_as_patterns(schemas)
    error = keys[(m.Error, "serialization")]
    paths: dict[str, Any] = {}
    for (method, path), op in OPERATIONS.items():
        success: dict[str, Any] = {"description": "success"}
        if op.reply is not None:
            success["content"] = _json(keys[(op.reply, "serialization")])
        for media in op.files:
            schema = {} if media == "application/json" else {"type": "string"}
            success.setdefault("content", {})[media] = {"schema": schema}
        responses: dict[str, Any] = {str(op.status): success}
        for status in ERRORS:
            responses[status] = {"$ref": f"#/components/responses/E{status}"}
        if path == "/api/v1/health":
            responses["503"] = {"description": "degraded", "content": success["content"]}
        responses["default"] = {"$ref": "#/components/responses/Error"}
        operation: dict[str, Any] = {
            "operationId": operation_id(method, path),
            "summary": op.summary,
            "responses": responses,
        }
        params: list[dict[str, Any]] = [
            {
                "name": p.strip("{}"),
                "in": "path",
                "required": True,
                "schema": STRING_PARAMS.get(
                    p.strip("{}"), {"type": "integer", "minimum": 1, "maximum": m.MAX_ID}
                ),
            }
            for p in path.split("/")
            if p.startswith("{")
        ]
        if op.query is not None:
            props = op.query.model_json_schema()["properties"]
            params += [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in props.items()
            ]
        if method != "get" and path not in NO_SESSION:
            params.append(
                {"name": "X-CSRF-Token", "in": "header", "required": True,
                 "schema": {"type": "string"}}
            )  # fmt: skip
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {
                "required": not op.body_optional,
                "content": _json(keys[(op.body, "validation")]),
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": "Linux Patch Manager API", "version": version},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "responses": {
                **{
                    f"E{status}": {"description": description, "content": _json(error)}
                    for status, description in ERRORS.items()
                },
                "E429": {
                    "description": ERRORS["429"],
                    "content": _json(error),
                    "headers": {
                        "Retry-After": {
                            "description": "seconds to wait before trying again",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
                "Error": {"description": "error", "content": _json(error)},
            },
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "pm_session"},
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (pm_…) or an access JWT from /api/v1/auth/token",
                },
            },
        },
        "security": [{"session": []}, {"bearer": []}],
        "paths": paths,
    }
