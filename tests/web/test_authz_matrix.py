"""The authorization matrix: every route (pages, API, WebSocket) by role by in-scope / out-of-scope
target → the expected answer.

The table below has one entry per route of the application; a route without an entry fails
``test_every_route_has_a_matrix_entry``. For each role the test logs in as that role and sends
every entry's request twice, once aimed at a target inside the role's scope (hosts of group
"in", their jobs and windows) and once at a target outside it (group "out"):

- ``ALLOW``: the role may do it. The answer is neither 401/403 nor 404 nor a server error (a
  422 for a value the service refuses is fine: the permission was granted).
- ``DENY``: 403, whatever the target (the role may not do this at all).
- out of scope, for a role that may do the action: the answer is *exactly* the answer for an
  id that does not exist (same status, same error code): nothing tells a scoped user that the
  host, job or window exists.

Admins see everything: for them "out of scope" is just another target, answered like in scope.
Requests that change or remove their target run against fresh targets made for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
import trio
import trio_websocket
from starlette.routing import Mount, Route, WebSocketRoute

from storage import create_enrolment, create_user, list_sessions, set_user_groups
from storage.tokens import create_token
from web.auth import is_public
from web.authz import Role, TokenScope, token_may_request
from web.tokens import PREFIX, hash_secret, new_secret

from ..conftest import Pki, fleet_addresses
from .conftest import WebRig, login
from .test_relay import browser_context, serve

pytestmark = pytest.mark.timeout(240)

BOGUS = 987_654_321  # an id nothing has
PASSWORD = "matrix-test-password-1"
ADM, OPR, AUD = Role.ADMIN, Role.OPERATOR, Role.AUDITOR
ALL = frozenset({ADM, OPR, AUD})
WRITERS = frozenset({ADM, OPR})
ADMIN = frozenset({ADM})
# The audit log: auditors of no group too, but the matrix's auditor is a member of a group
# (authz._reads_whole_log); compared by identity (``is AUDITORS``), not as ADMIN.
AUDITORS = frozenset({ADM})
WRONG = {"current_password": "not the password", "new_password": "a-new-password-0042"}
SCOPED_KEYS = ("host_id", "job_id", "window_id", "waiver_id")


@dataclass(frozen=True)
class Entry:
    """One route: who may use it, and one request that exercises it. Values ``"{host_id}"``
    etc. in the path, JSON body or form are filled with the target's ids."""

    allowed: frozenset[Role]
    json: Any = None
    form: Mapping[str, str] | None = None
    fresh: bool = False  # changes or removes its target: run against targets made for it
    last: bool = False  # ends the session
    expect: frozenset[int] = frozenset()  # success answers, when not the kind's (``success``)


WAIVER = {"owner": "sec", "reason": "vendor fix pending", "expires_at": "2030-01-01T00:00:00Z"}

REFUSED = frozenset({422})  # the request sends a value the service refuses on purpose

DEFINITION = {"name": "weekly", "report": "reboots", "format": "csv", "schedule": "0 6 * * 1"}

MATRIX: dict[tuple[str, str], Entry] = {
    # -- public and session ---------------------------------------------------------------
    ("GET", "/api/v1/health"): Entry(ALL),
    ("GET", "/api/v1/openapi.json"): Entry(ALL),
    ("GET", "/login"): Entry(ALL),
    ("POST", "/login"): Entry(
        ALL, form={"username": "x", "password": "y"}, expect=frozenset({400})
    ),  # no form token
    ("POST", "/logout"): Entry(ALL, form={}, last=True),
    ("GET", "/password"): Entry(ALL),
    ("POST", "/password"): Entry(ALL, form=WRONG, expect=REFUSED),
    ("POST", "/api/v1/profile/password"): Entry(ALL, json=WRONG, expect=REFUSED),
    ("GET", "/profile"): Entry(ALL),
    # -- second factor: the login's second step is public (no login in progress here: back to
    # the password, 400 for the JSON ceremonies); enrolment, Security and re-authentication
    # are every user's own
    ("GET", "/login/mfa"): Entry(ALL, expect=frozenset({303})),
    ("POST", "/login/mfa"): Entry(ALL, form={"code": "000000"}),
    ("POST", "/login/webauthn/options"): Entry(ALL, json={}, expect=frozenset({400})),
    ("POST", "/login/webauthn"): Entry(ALL, json={}, expect=frozenset({400})),
    ("GET", "/mfa/setup"): Entry(ALL),
    ("POST", "/mfa/totp"): Entry(ALL, form={"code": "000000"}, expect=REFUSED),
    ("POST", "/mfa/webauthn/options"): Entry(ALL, json={}),
    ("POST", "/mfa/webauthn"): Entry(ALL, json={}, expect=REFUSED),
    ("GET", "/security"): Entry(ALL),
    ("POST", "/security/recovery-codes"): Entry(ALL, form={}, expect=frozenset({200})),
    # the only factor: refused (a second factor is mandatory)
    ("POST", "/security/totp/remove"): Entry(ALL, form={}, expect=frozenset({409})),
    # no such key of the user: "removed already" (the last-factor check follows the delete)
    ("POST", "/security/webauthn/remove"): Entry(
        ALL, form={"credential_id": "1"}, expect=frozenset({303})
    ),
    ("POST", "/reauth"): Entry(ALL, form={"code": "000000"}, expect=REFUSED),
    # someone else's session id: "that session had ended already" (only one's own are revoked)
    ("POST", "/profile/sessions/{session_id:int}/revoke"): Entry(ALL, form={}),
    ("POST", "/profile/time-zone"): Entry(ALL, form={"time_zone": "Europe/Berlin"}),
    # -- users (admins only; a user's own record and sessions are the profile's) ------------
    ("GET", "/api/v1/users"): Entry(ADMIN),
    ("POST", "/api/v1/users"): Entry(ADMIN, json={"username": "{new_name}", "role": "auditor"}),
    ("GET", "/api/v1/users/{user_id:int}"): Entry(ADMIN),
    ("PATCH", "/api/v1/users/{user_id:int}"): Entry(ADMIN, json={"role": "auditor"}, fresh=True),
    ("POST", "/api/v1/users/{user_id:int}/unlock"): Entry(ADMIN, json={}, fresh=True),
    ("POST", "/api/v1/users/{user_id:int}/reset-password"): Entry(ADMIN, json={}, fresh=True),
    ("POST", "/api/v1/users/{user_id:int}/reset-mfa"): Entry(ADMIN, json={}, fresh=True),
    ("GET", "/api/v1/users/{user_id:int}/sessions"): Entry(ADMIN),
    ("DELETE", "/api/v1/users/{user_id:int}/sessions"): Entry(ADMIN, fresh=True),
    ("DELETE", "/api/v1/users/{user_id:int}/sessions/{session_id:int}"): Entry(ADMIN, fresh=True),
    ("GET", "/users"): Entry(ADMIN),
    ("POST", "/users"): Entry(
        ADMIN, form={"username": "{new_name}", "role": "auditor"}, expect=frozenset({201})
    ),  # the page with the one-time password
    ("POST", "/users/{user_id:int}"): Entry(ADMIN, form={"role": "auditor"}, fresh=True),
    ("POST", "/users/{user_id:int}/unlock"): Entry(ADMIN, form={}, fresh=True),
    ("POST", "/users/{user_id:int}/reset-password"): Entry(
        ADMIN, form={}, fresh=True, expect=frozenset({200})
    ),  # the page with the one-time password
    ("POST", "/users/{user_id:int}/revoke-sessions"): Entry(ADMIN, form={}, fresh=True),
    ("POST", "/users/{user_id:int}/reset-mfa"): Entry(ADMIN, form={}, fresh=True),
    ("POST", "/users/{user_id:int}/sessions/{session_id:int}/revoke"): Entry(
        ADMIN, form={}, fresh=True
    ),
    ("GET", "/ca/root.crt"): Entry(ALL),
    ("GET", "/metrics"): Entry(ADMIN),
    # -- certificates (issue 14): the CRL is public (agents fetch it), the rest admin-only ---
    ("GET", "/api/v1/pki/crl.pem"): Entry(ALL),
    ("GET", "/api/v1/certificates"): Entry(ADMIN),
    ("POST", "/api/v1/certificates/renew"): Entry(ADMIN, json={"kind": "web_server"}),
    ("POST", "/api/v1/certificates/revoke"): Entry(
        ADMIN, json={"serial": "not-hex"}, expect=REFUSED
    ),
    ("POST", "/api/v1/enroll"): Entry(
        ALL,
        json={"machine_id": "m", "fqdn": "m.example.com", "ip_address": "not-an-ip"},
        expect=REFUSED,
    ),  # fmt: skip
    ("GET", "/api/v1/enroll/status/{token}"): Entry(ALL),
    ("GET", "/api/v1/enrolments"): Entry(ADMIN),
    ("GET", "/api/v1/pki/repo-config"): Entry(ALL, expect=REFUSED),  # no distro_id
    ("GET", "/api/v1/repo-configs"): Entry(ADMIN),
    ("GET", "/api/v1/admin/notifications"): Entry(ADMIN),
    ("PUT", "/api/v1/admin/notifications"): Entry(ADMIN, json={}),
    ("POST", "/api/v1/admin/notifications/test"): Entry(ADMIN, json={"to": "a@example.test"}),
    ("GET", "/api/v1/admin/notifications/outbox"): Entry(ADMIN),
    ("PUT", "/api/v1/admin/log-level"): Entry(ADMIN, json={"level": "warning"}),
    ("GET", "/api/v1/profile/notifications"): Entry(ALL),
    ("PUT", "/api/v1/profile/notifications"): Entry(ALL, json={"email": "", "events": []}),
    ("GET", "/notifications"): Entry(ALL),
    ("POST", "/notifications/subscription"): Entry(ALL, form={"email": ""}),
    ("POST", "/notifications/settings"): Entry(ADMIN, form={"security": "starttls"}),
    ("POST", "/notifications/test"): Entry(
        ADMIN, form={"to": "a@example.test"}, expect=frozenset({200})
    ),
    ("POST", "/api/v1/repo-configs"): Entry(ADMIN, json={"distro_id": "debian"}),
    ("POST", "/api/v1/repo-configs/delete"): Entry(ADMIN, json={"distro_id": "bad id!"}),
    ("GET", "/certificates"): Entry(ADMIN),
    ("POST", "/hosts/{host_id:int}/certificate-bundle"): Entry(
        ADMIN, form={}, expect=frozenset({200})
    ),  # the bundle itself
    ("POST", "/certificates/renew"): Entry(ADMIN, form={"kind": "web_server"}),
    ("POST", "/certificates/issue"): Entry(ADMIN, form={"names": "bad name!"}, expect=REFUSED),
    ("POST", "/certificates/revoke"): Entry(ADMIN, form={"serial": "zz"}, expect=REFUSED),
    ("POST", "/certificates/reissue"): Entry(ADMIN, form={"serial": "zz"}, expect=frozenset({422})),
    ("GET", "/settings"): Entry(ADMIN),
    ("POST", "/settings/repo-configs"): Entry(ADMIN, form={"distro_id": "matrix"}),
    ("POST", "/settings/repo-configs/delete"): Entry(ADMIN, form={"distro_id": "bad id!"}),
    # -- single sign-on: sign-in is public (off here: back to /login; none started: 400) ----
    ("GET", "/sso/login"): Entry(ALL, expect=frozenset({303})),
    ("GET", "/sso/callback"): Entry(ALL, expect=frozenset({400})),
    ("GET", "/settings/sso"): Entry(ADMIN),
    ("POST", "/settings/sso/save"): Entry(ADMIN, form={"preset": "oidc", "groups_claim": "groups"}),
    ("POST", "/settings/sso/test"): Entry(ADMIN, form={}, expect=frozenset({200})),
    ("POST", "/settings/sso/mappings"): Entry(ADMIN, form={"claim_value": "m", "role": "auditor"}),
    ("POST", "/settings/sso/mappings/delete"): Entry(ADMIN, form={"claim_value": "m"}),
    ("POST", "/settings/sso/identities"): Entry(
        ADMIN, form={"user_id": "0", "issuer": "i", "subject": "s"}, expect=REFUSED
    ),
    ("POST", "/settings/sso/identities/delete"): Entry(
        ADMIN, form={"user_id": "0", "identity_id": "1"}, expect=REFUSED
    ),
    ("GET", "/api/v1/users/{user_id:int}/sso-identities"): Entry(ADMIN),
    ("POST", "/api/v1/users/{user_id:int}/sso-identities"): Entry(
        ADMIN, json={"issuer": "https://idp.example.com", "subject": "{new_name}"}
    ),
    ("POST", "/api/v1/users/{user_id:int}/sso-identities/unlink"): Entry(
        ADMIN, json={"issuer": "https://idp.example.com", "subject": "not-linked"}
    ),
    ("GET", "/enrolments"): Entry(ADMIN),
    ("POST", "/enrolments/{enrolment_id:int}/approve"): Entry(ADMIN, form={}, fresh=True),
    ("POST", "/enrolments/{enrolment_id:int}/deny"): Entry(ADMIN, form={}, fresh=True),
    ("POST", "/api/v1/enrolments/{enrolment_id:int}/approve"): Entry(ADMIN, json={}, fresh=True),
    ("POST", "/api/v1/enrolments/{enrolment_id:int}/deny"): Entry(ADMIN, json={}, fresh=True),
    ("WS", "/api/v1/live"): Entry(ALL),  # its filtering: test_relay_shows_only_scoped_hosts
    # -- hosts ----------------------------------------------------------------------------
    ("GET", "/api/v1/hosts"): Entry(ALL),
    ("POST", "/api/v1/hosts"): Entry(ADMIN, json={"name": "{new_address}"}),
    ("POST", "/api/v1/hosts/refresh"): Entry(WRITERS, json={"host_ids": ["{host_id}"]}),
    ("GET", "/api/v1/hosts/{host_id:int}"): Entry(ALL),
    ("DELETE", "/api/v1/hosts/{host_id:int}"): Entry(ADMIN, fresh=True),
    ("POST", "/api/v1/hosts/{host_id:int}/refresh"): Entry(WRITERS, json={}),
    ("GET", "/api/v1/hosts/{host_id:int}/patches"): Entry(ALL),
    ("GET", "/api/v1/hosts/{host_id:int}/packages"): Entry(ALL),
    ("GET", "/api/v1/hosts/{host_id:int}/history"): Entry(ALL),
    ("GET", "/api/v1/hosts/{host_id:int}/policy"): Entry(ALL),
    ("GET", "/api/v1/actors"): Entry(ALL),
    ("GET", "/api/v1/fleet/summary"): Entry(ALL),
    ("GET", "/"): Entry(ALL),
    ("GET", "/hosts"): Entry(ALL),
    ("POST", "/hosts/add"): Entry(ADMIN, form={"name": "{new_address}"}),
    ("POST", "/hosts/bulk"): Entry(WRITERS, form={"action": "refresh", "host_id": "{host_id}"}),
    ("GET", "/hosts/{host_id:int}"): Entry(ALL),
    ("POST", "/hosts/{host_id:int}/refresh"): Entry(WRITERS, form={}),
    ("POST", "/hosts/{host_id:int}/remove"): Entry(ADMIN, form={}, fresh=True),
    # -- groups ---------------------------------------------------------------------------
    ("GET", "/api/v1/groups"): Entry(ALL),
    ("POST", "/api/v1/groups"): Entry(ADMIN, json={"name": "{new_name}"}),
    ("PATCH", "/api/v1/groups/{group_id:int}"): Entry(
        ADMIN, json={"name": "{new_name}"}, fresh=True
    ),
    ("DELETE", "/api/v1/groups/{group_id:int}"): Entry(ADMIN, fresh=True),
    ("POST", "/api/v1/groups/{group_id:int}/hosts"): Entry(
        ADMIN, json={"host_ids": ["{host_id}"]}, fresh=True
    ),
    ("GET", "/groups"): Entry(ALL),
    ("POST", "/groups"): Entry(ADMIN, form={"name": "{new_name}"}),
    ("POST", "/groups/{group_id:int}/rename"): Entry(
        ADMIN, form={"name": "{new_name}"}, fresh=True
    ),
    ("POST", "/groups/{group_id:int}/delete"): Entry(ADMIN, form={}, fresh=True),
    # -- discovery (admins: a scan probes networks; what it finds is in nobody's groups) ---
    ("POST", "/api/v1/discovery"): Entry(ADMIN, json={"cidr": "{scan_cidr}"}),
    ("GET", "/api/v1/discovery/{scan_id:int}"): Entry(ADMIN),
    ("POST", "/api/v1/discovery/{scan_id:int}/cancel"): Entry(ADMIN, json={}),
    ("POST", "/api/v1/discovery/{scan_id:int}/register"): Entry(
        ADMIN, json={"addresses": ["127.0.0.9"]}, expect=REFUSED
    ),  # not an address the scan found
    ("GET", "/discovery"): Entry(ADMIN),
    ("POST", "/discovery"): Entry(ADMIN, form={"cidr": "{scan_cidr}"}),
    ("GET", "/discovery/{scan_id:int}"): Entry(ADMIN),
    ("POST", "/discovery/{scan_id:int}/cancel"): Entry(ADMIN, form={}),
    ("POST", "/discovery/{scan_id:int}/register"): Entry(ADMIN, form={"address": "127.0.0.9"}),
    # -- jobs -----------------------------------------------------------------------------
    ("GET", "/api/v1/jobs"): Entry(ALL),
    ("POST", "/api/v1/jobs"): Entry(WRITERS, json={"host_ids": ["{host_id}"]}),
    ("GET", "/api/v1/jobs/{job_id:int}"): Entry(ALL),
    ("POST", "/api/v1/jobs/{job_id:int}/cancel"): Entry(WRITERS, json={}, fresh=True),
    ("POST", "/api/v1/jobs/{job_id:int}/retry"): Entry(WRITERS, json={}),
    ("POST", "/api/v1/jobs/{job_id:int}/rollback"): Entry(
        WRITERS, json={}, expect=REFUSED
    ),  # nothing to roll back
    ("POST", "/api/v1/deploy/preview"): Entry(WRITERS, json={"host_ids": ["{host_id}"]}),
    ("POST", "/api/v1/jobs/plan"): Entry(WRITERS, json={"host_ids": ["{host_id}"]}),
    ("GET", "/deploy"): Entry(WRITERS),
    ("POST", "/deploy"): Entry(WRITERS, form={"host_ids": "{host_id}"}),
    ("GET", "/jobs"): Entry(ALL),
    ("GET", "/jobs/{job_id:int}"): Entry(ALL),
    ("POST", "/jobs/{job_id:int}/{action:str}"): Entry(WRITERS, form={}, fresh=True),
    # -- windows and blackouts ------------------------------------------------------------
    ("GET", "/api/v1/windows"): Entry(ALL),
    ("POST", "/api/v1/windows"): Entry(WRITERS, json={"host_id": "{host_id}"}),
    ("POST", "/api/v1/windows/preview"): Entry(WRITERS, json={}),  # a draft: no target
    ("PUT", "/api/v1/windows/{window_id:int}"): Entry(WRITERS, json={"host_id": "{host_id}"}),
    ("DELETE", "/api/v1/windows/{window_id:int}"): Entry(WRITERS, fresh=True),
    ("GET", "/api/v1/calendar"): Entry(ALL),
    ("GET", "/api/v1/blackouts"): Entry(ALL),
    ("POST", "/api/v1/blackouts"): Entry(ADMIN, json={"blackout": True}),
    ("DELETE", "/api/v1/blackouts/{blackout_id:int}"): Entry(ADMIN, fresh=True),
    ("GET", "/windows"): Entry(ALL),
    ("POST", "/windows"): Entry(WRITERS, form={"target": "host:{host_id}"}),
    ("POST", "/windows/{window_id:int}/delete"): Entry(WRITERS, form={}, fresh=True),
    ("POST", "/windows/{window_id:int}"): Entry(
        WRITERS,
        form={
            "target": "host:{host_id}",
            "recurrence": "daily",
            "start_date": "2026-12-01",
            "start_time": "03:00",
            "duration_minutes": "60",
            "timezone": "UTC",
        },
        fresh=True,
    ),  # fmt: skip
    ("POST", "/windows/{window_id:int}/disable"): Entry(WRITERS, form={}, fresh=True),
    ("POST", "/windows/{window_id:int}/enable"): Entry(WRITERS, form={}, fresh=True),
    ("POST", "/blackouts"): Entry(ADMIN, form={"blackout": "yes"}),
    ("POST", "/blackouts/{blackout_id:int}/delete"): Entry(ADMIN, form={}, fresh=True),
    # -- reports and risk waivers ---------------------------------------------------------
    ("GET", "/api/v1/reports/compliance"): Entry(ALL),
    ("GET", "/api/v1/reports/patch-history"): Entry(ALL),
    ("GET", "/api/v1/reports/exposure"): Entry(ALL),
    ("GET", "/api/v1/reports/reboots"): Entry(ALL),
    ("GET", "/api/v1/reports/evidence"): Entry(ALL),
    ("GET", "/api/v1/waivers"): Entry(ALL),
    ("POST", "/api/v1/waivers"): Entry(WRITERS, json={"host_id": "{host_id}", **WAIVER}),
    ("POST", "/api/v1/waivers/{waiver_id:int}/revoke"): Entry(WRITERS, json={}, fresh=True),
    ("GET", "/reports"): Entry(ALL),
    # -- the audit log (admins and auditors) ----------------------------------------------
    ("GET", "/api/v1/audit"): Entry(AUDITORS),
    ("GET", "/api/v1/audit/export"): Entry(AUDITORS),
    ("POST", "/api/v1/audit/verify"): Entry(AUDITORS, json={}),
    ("GET", "/audit"): Entry(AUDITORS),
    ("POST", "/audit/verify"): Entry(AUDITORS, form={}),
    ("GET", "/waivers"): Entry(ALL),
    ("POST", "/waivers"): Entry(WRITERS, form={"host_id": "{host_id}", **WAIVER}),
    ("POST", "/waivers/{waiver_id:int}/revoke"): Entry(WRITERS, form={}, fresh=True),
    ("GET", "/api/v1/report-definitions"): Entry(ALL),
    ("POST", "/api/v1/report-definitions"): Entry(WRITERS, json=DEFINITION),
    ("DELETE", "/api/v1/report-definitions/{definition_id:int}"): Entry(WRITERS, fresh=True),
    ("GET", "/api/v1/report-definitions/{definition_id:int}/download"): Entry(ALL),
    # -- API tokens (a session's own; admins may revoke anyone's) and the JWT exchange -------
    ("GET", "/api/v1/tokens"): Entry(ALL),
    ("POST", "/api/v1/tokens"): Entry(ALL, json={"name": "matrix", "scope": "read"}),
    ("DELETE", "/api/v1/tokens/{token_id:int}"): Entry(ALL),  # the caller's own token
    ("POST", "/api/v1/auth/token"): Entry(ALL, json={"grant_type": "password"}, expect=REFUSED),
    ("GET", "/api/v1/auth/jwks.json"): Entry(ALL),
    ("GET", "/tokens"): Entry(ALL),
    ("POST", "/tokens"): Entry(
        ALL, form={"name": "matrix", "scope": "read"}, expect=frozenset({201})
    ),  # the page with the new token, shown once
    ("POST", "/tokens/{token_id:int}/revoke"): Entry(ALL, form={}),  # the caller's own token
}

WINDOW = {
    "name": "matrix",
    "recurrence": "daily",
    "start_date": "2026-12-01",
    "start_time": "03:00",
    "duration_minutes": 60,
    "timezone": "UTC",
}
BLACKOUT = {
    "name": "freeze",
    "starts_at": "2027-12-20T00:00:00+00:00",
    "ends_at": "2028-01-03T00:00:00+00:00",
}


def app_routes(rig: WebRig) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for route in rig.app.routes:
        if isinstance(route, WebSocketRoute):
            keys.add(("WS", route.path))
        elif isinstance(route, Route):
            keys |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
        else:
            assert isinstance(route, Mount) and route.path == "/static", route
    return keys


async def test_every_route_has_a_matrix_entry(web_rig: WebRig) -> None:
    routes = app_routes(web_rig)
    assert sorted(routes - MATRIX.keys()) == [], "routes without an authorization entry"
    assert sorted(MATRIX.keys() - routes) == [], "entries for routes that do not exist"


# -- the world the requests aim at ------------------------------------------------------------


@dataclass
class Targets:
    """One of each thing, in one scope: ids by placeholder name."""

    ids: dict[str, int] = field(default_factory=dict)


@dataclass
class World:
    admin: httpx2.AsyncClient
    group_names: dict[str, str]  # "in"/"out" → name
    group_ids: dict[str, int]
    scan_id: int
    scan_cidr: str
    _addresses: Any = None
    _names: Any = field(default_factory=lambda: itertools.count(1))
    rig: Any = None  # the application, its database and password hashing (user targets)
    db: Any = None  # for targets no route creates (enrolment requests come from agents)

    def address(self) -> str:
        return str(next(self._addresses))

    def name(self) -> str:
        return f"m{next(self._names)}"

    async def targets(self, side: str) -> Targets:
        """A host of group ``side`` ("in"/"out"), a waiting job and a window on it, a fresh
        group (for the group routes, admin-only) and a blackout."""
        ids: dict[str, int] = {}
        host = await self.admin.post(
            "/api/v1/hosts",
            json={"name": self.address(), "groups": [self.group_names[side]]},
        )
        assert host.status_code == 201, host.text
        ids["host_id"] = host.json()["id"]
        job = await self.admin.post("/api/v1/jobs", json={"host_ids": [ids["host_id"]]})
        assert job.status_code == 201, job.text
        ids["job_id"] = job.json()["job_id"]
        window = await self.admin.post(
            "/api/v1/windows", json={**WINDOW, "host_id": ids["host_id"]}
        )
        assert window.status_code == 201, window.text
        ids["window_id"] = window.json()["id"]
        group = await self.admin.post("/api/v1/groups", json={"name": self.name()})
        assert group.status_code == 201, group.text
        ids["group_id"] = group.json()["id"]
        blackout = await self.admin.post("/api/v1/blackouts", json=BLACKOUT)
        assert blackout.status_code == 201, blackout.text
        ids["blackout_id"] = blackout.json()["id"]
        waiver = await self.admin.post(
            "/api/v1/waivers", json={"host_id": ids["host_id"], **WAIVER}
        )
        assert waiver.status_code == 201, waiver.text
        ids["waiver_id"] = waiver.json()["id"]
        definition = await self.admin.post("/api/v1/report-definitions", json=DEFINITION)
        assert definition.status_code == 201, definition.text
        ids["definition_id"] = definition.json()["id"]
        ids["scan_id"] = self.scan_id
        machine = self.name()
        ids["enrolment_id"] = await self.db.run(
            lambda c: create_enrolment(
                c, token_sha256=f"matrix-{machine}-{side}", machine_id=machine,
                fqdn=f"{machine}.example.com", ip_address=self.address(), hostname=machine,
                os_details={}, source_address="127.0.0.1",
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )
        )  # fmt: skip
        return Targets(ids)

    async def logged_in_user(self) -> tuple[int, int]:
        """A new user (an auditor of no group) with one session: targets for the user routes."""
        name = self.name()
        hashed = await self.rig.auth.hash_password(PASSWORD)
        user = await self.rig.db.run(create_user, name, hashed, "auditor")
        transport = httpx2.ASGITransport(app=self.rig.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as c:
            await login(c, PASSWORD, name)
        (session,) = await self.rig.db.run(list_sessions, user.id)
        return user.id, session.id


def addresses() -> Any:
    """Fresh loopback addresses in this suite's block (nothing listens there)."""
    while True:
        a, b, c, _ = fleet_addresses(250).split(".")
        for last in range(1, 250):
            yield f"{a}.{b}.{c}.{last}"


async def build_world(rig: WebRig, admin: httpx2.AsyncClient) -> World:
    groups = {}
    for side in ("in", "out"):
        created = await admin.post("/api/v1/groups", json={"name": f"scope-{side}"})
        assert created.status_code == 201, created.text
        groups[side] = created.json()["id"]
    a, b, c, _ = fleet_addresses(4).split(".")
    cidr = f"{a}.{b}.{c}.0/30"
    scan = await admin.post("/api/v1/discovery", json={"cidr": cidr})
    assert scan.status_code == 202, scan.text
    return World(
        admin,
        {"in": "scope-in", "out": "scope-out"},
        groups,
        scan.json()["scan_id"],
        cidr,
        addresses(),
        rig=rig,
        db=rig.db,
    )


async def user_client(rig: WebRig, role: Role, group_ids: list[int]) -> httpx2.AsyncClient:
    """A client logged in as a new user of ``role`` scoped to ``group_ids``."""
    name = f"{role.value}-user"
    hashed = await rig.auth.hash_password(PASSWORD)
    user = await rig.db.run(create_user, name, hashed, role.value)
    await rig.db.run(set_user_groups, user.id, group_ids)
    transport = httpx2.ASGITransport(app=rig.app)
    client = httpx2.AsyncClient(transport=transport, base_url="http://testserver")
    client.headers["x-csrf-token"] = await login(client, PASSWORD, name)
    return client


# -- sending one entry -----------------------------------------------------------------------


def fill(value: Any, ids: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        for key, given in ids.items():
            if value == "{" + key + "}":
                return given
            value = value.replace("{" + key + "}", str(given))
        return value
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def concrete_path(path: str, ids: Mapping[str, Any]) -> str:
    for key, given in ids.items():
        path = path.replace("{" + key + ":int}", str(given))
    return path.replace("{action:str}", "cancel")


def json_body(path: str, entry: Entry) -> Any:
    body = entry.json
    if path.startswith("/api/v1/windows") and isinstance(body, dict):
        body = {**WINDOW, **body}
    if path.startswith("/api/v1/blackouts") and body == {"blackout": True}:
        body = dict(BLACKOUT)
    return body


def form_body(path: str, entry: Entry, csrf: str) -> dict[str, str]:
    form = dict(entry.form or {})
    if path == "/windows":
        form = {**{k: str(v) for k, v in WINDOW.items()}, **form}
    if path == "/blackouts":
        form = {k: v[:16] if k != "name" else v for k, v in BLACKOUT.items()}
    return {**form, "csrf_token": csrf}


async def send(
    client: httpx2.AsyncClient, key: tuple[str, str], entry: Entry, ids: Mapping[str, Any]
) -> httpx2.Response:
    method, path = key
    url = concrete_path(path, ids)
    if entry.form is not None:
        data = fill(form_body(path, entry, client.headers["x-csrf-token"]), ids)
        return await client.request(method, url, data=data)
    body = json_body(path, entry)
    if body is not None:
        return await client.request(method, url, json=fill(body, ids))
    return await client.request(method, url)


def error_code(response: httpx2.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def success(key: tuple[str, str], entry: Entry) -> frozenset[int]:
    """The answers an allowed request may get: the entry's own (``expect``: a request that
    sends a value the service refuses on purpose), else by kind: a page 200, a form post a
    303 redirect, an API change 200/201/202/204."""
    if entry.expect:
        return entry.expect
    if key[0] == "GET":
        return frozenset({200})
    if entry.form is not None:
        return frozenset({303})
    return frozenset({200, 201, 202, 204})


def scoped(key: tuple[str, str], entry: Entry) -> bool:
    text = key[1] + json.dumps(entry.json) + json.dumps(entry.form)
    return any("{" + k for k in SCOPED_KEYS if "{" + k in text)


# -- the matrix ------------------------------------------------------------------------------


async def relay_answer(nursery: trio.Nursery, rig: WebRig, pki: Pki, path: str, cookie: str) -> str:
    """What a WebSocket to ``path`` with the session ``cookie`` gets first: ``"snapshot"`` or
    ``"closed <code>"``."""
    base_url, stop = await serve(nursery, rig, pki)
    host, port = base_url.removeprefix("https://").split(":")
    try:
        with trio.fail_after(30):
            async with trio_websocket.open_websocket(
                host,
                int(port),
                path,
                use_ssl=browser_context(pki),
                extra_headers=[
                    (b"cookie", f"pm_session={cookie}".encode()),
                    (b"origin", base_url.encode()),
                ],  # fmt: skip
            ) as ws:
                try:
                    return str(json.loads(await ws.get_message())["type"])
                except trio_websocket.ConnectionClosed as closed:
                    return f"closed {closed.reason.code if closed.reason else None}"
    finally:
        stop.set()


@pytest.mark.parametrize("role", [ADM, OPR, AUD], ids=lambda r: r.value)
async def test_authorization_matrix_every_route_role_and_scope(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki, role: Role
) -> None:
    world = await build_world(web_rig, client)
    base = {"in": await world.targets("in"), "out": await world.targets("out")}
    who = client if role is ADM else await user_client(web_rig, role, [world.group_ids["in"]])
    failures: list[str] = []
    users: dict[str, tuple[int, int]] = {}  # a user with a session, for the user routes
    order = sorted(MATRIX.items(), key=lambda kv: (kv[1].last, kv[1].fresh))
    for key, entry in order:
        if key[0] == "WS":  # over a real TLS server: the relay accepts or refuses the role
            answer = await relay_answer(nursery, web_rig, pki, key[1], who.cookies["pm_session"])
            if answer != ("snapshot" if role in entry.allowed else "closed 4403"):
                failures.append(f"{role.value} WS {key[1]}: {answer}")
            continue
        for side in ("in", "out"):
            targets = await world.targets(side) if entry.fresh else base[side]
            ids = {
                **targets.ids,
                "new_address": world.address(),
                "new_name": world.name(),
                "scan_cidr": world.scan_cidr,
            }
            # A report definition is its creator's (and the admins'): an operator's "in scope"
            # one is their own; an auditor (who may not create any) has none in scope.
            owned = "{definition_id" in key[1]
            if owned and side == "in" and role is OPR:
                own = await who.post("/api/v1/report-definitions", json=DEFINITION)
                ids["definition_id"] = own.json()["id"]
            if "{user_id" in key[1] or "{session_id" in key[1]:
                if entry.fresh or side not in users:
                    users[side] = await world.logged_in_user()
                ids["user_id"], ids["session_id"] = users[side]
            if "{token_id" in key[1]:  # one's own token (not a host-scoped target)
                own = await who.post("/api/v1/tokens", json={"name": "own", "scope": "read"})
                ids["token_id"] = own.json()["item"]["id"]
            response = await send(who, key, entry, ids)
            status = response.status_code
            label = f"{role.value} {key[0]} {key[1]} ({side} of scope): {status}"
            if status >= 500 or status == 401:
                failures.append(f"{label} {response.text[:200]}")
            elif role not in entry.allowed:
                if status != 403:
                    failures.append(f"{label}, expected 403")
            elif (
                (side == "out" or (owned and role is AUD))
                and role is not ADM
                and (scoped(key, entry) or owned)
            ):
                hidden = (*SCOPED_KEYS, "definition_id")
                missing = {k: BOGUS if k in hidden else v for k, v in ids.items()}
                like = await send(who, key, entry, missing)
                if (status, error_code(response)) != (like.status_code, error_code(like)):
                    failures.append(f"{label}, but a missing id answers {like.status_code}")
                if status < 400 and status != 303:
                    failures.append(f"{label}, expected a refusal")
            elif status in (403, 404):
                failures.append(f"{label}, expected the request allowed")
            elif status not in success(key, entry):
                failures.append(f"{label}, expected {sorted(success(key, entry))}")
            if entry.last:
                break
    if who is not client:
        await who.aclose()
    assert failures == [], "\n".join(failures)


# -- what each role sees ----------------------------------------------------------------------


async def test_scoped_lists_counts_and_groups_show_only_the_users_groups(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    world = await build_world(web_rig, client)
    inside, outside = await world.targets("in"), await world.targets("out")
    for role in (OPR, AUD):
        who = await user_client(web_rig, role, [world.group_ids["in"]])
        hosts = (await who.get("/api/v1/hosts")).json()
        assert [h["id"] for h in hosts["hosts"]] == [inside.ids["host_id"]]
        assert hosts["total"] == 1
        assert (await who.get("/api/v1/fleet/summary")).json()["hosts"] == 1
        jobs = (await who.get("/api/v1/jobs")).json()["jobs"]
        assert [j["id"] for j in jobs] == [inside.ids["job_id"]]
        windows = (await who.get("/api/v1/windows")).json()["windows"]
        assert [w["id"] for w in windows] == [inside.ids["window_id"]]
        groups = (await who.get("/api/v1/groups")).json()["groups"]
        assert [g["id"] for g in groups] == [world.group_ids["in"]]
        page = (await who.get("/hosts")).text
        assert f'href="/hosts/{inside.ids["host_id"]}"' in page
        assert f'href="/hosts/{outside.ids["host_id"]}"' not in page
        await who.aclose()
    admin_hosts = (await client.get("/api/v1/hosts")).json()["hosts"]
    assert {inside.ids["host_id"], outside.ids["host_id"]} <= {h["id"] for h in admin_hosts}


async def test_operator_sees_ungrouped_hosts_only_when_the_setting_allows(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    from web import create_app

    world = await build_world(web_rig, client)
    loose = await client.post("/api/v1/hosts", json={"name": world.address()})
    loose_id = loose.json()["id"]
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    listed = (await operator.get("/api/v1/hosts")).json()["hosts"]
    assert loose_id not in [h["id"] for h in listed]
    assert (await operator.get(f"/api/v1/hosts/{loose_id}")).status_code == 404
    await operator.aclose()
    web_rig.app = create_app(
        web_rig.app.state.relay.handle, web_rig.db, auth=web_rig.auth, operators_see_ungrouped=True
    )
    transport = httpx2.ASGITransport(app=web_rig.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as again:
        again.headers["x-csrf-token"] = await login(again, PASSWORD, "operator-user")
        assert (await again.get(f"/api/v1/hosts/{loose_id}")).status_code == 200


async def test_nav_shows_deploy_and_discovery_only_to_roles_that_may_use_them(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    admin_page = (await client.get("/")).text
    assert 'href="/deploy"' in admin_page and 'href="/discovery"' in admin_page
    for role, deploy in ((OPR, True), (AUD, False)):
        who = await user_client(web_rig, role, [])
        page = (await who.get("/")).text
        assert ('href="/deploy"' in page) is deploy
        assert 'href="/discovery"' not in page
        await who.aclose()


async def test_health_details_only_for_admins(web_rig: WebRig, client: httpx2.AsyncClient) -> None:
    assert "database" in (await client.get("/api/v1/health")).json()
    for role in (OPR, AUD):
        who = await user_client(web_rig, role, [])
        body = (await who.get("/api/v1/health")).json()
        assert set(body) == {"status"}
        await who.aclose()


# -- the live relay --------------------------------------------------------------------------


async def relay_cookie(base: str, pki: Pki, username: str, password: str) -> str:
    async with httpx2.AsyncClient(verify=browser_context(pki), base_url=base) as http:
        await login(http, password, username)
        return str(http.cookies["pm_session"])


async def test_relay_shows_only_scoped_hosts_and_drops_a_host_when_its_group_is_left(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    world = await build_world(web_rig, client)
    inside, outside = await world.targets("in"), await world.targets("out")
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    await operator.aclose()
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    host, port = base_url.removeprefix("https://").split(":")
    in_id, out_id = inside.ids["host_id"], outside.ids["host_id"]
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(
            host,
            int(port),
            "/api/v1/live",
            use_ssl=browser_context(pki),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", base_url.encode()),
            ],  # fmt: skip
        ) as ws:
            snapshot = json.loads(await ws.get_message())
            assert snapshot["type"] == "snapshot"
            assert [h["host_id"] for h in snapshot["hosts"]] == [in_id]
            web_rig.system.handle.refresh([in_id, out_id])  # events for both hosts
            # The admin moves the operator's host out of the group: the socket drops it at once.
            moved = await client.post(
                f"/api/v1/groups/{world.group_ids['in']}/hosts",
                json={"host_ids": [in_id], "member": False},
            )
            assert moved.status_code == 200
            seen: list[dict[str, Any]] = []
            while True:
                message = json.loads(await ws.get_message())
                seen.append(message)
                if message == {"type": "removed", "host_id": in_id}:
                    break
            ids = {m.get("host_id") or m.get("host", {}).get("host_id") for m in seen}
            assert out_id not in ids
            # ... and the host of the group the operator is put in appears.
            joined = await client.post(
                f"/api/v1/groups/{world.group_ids['in']}/hosts",
                json={"host_ids": [out_id], "member": True},
            )
            assert joined.status_code == 200
            while True:
                message = json.loads(await ws.get_message())
                if message["type"] == "change" and message["host"]["host_id"] == out_id:
                    break
                assert message.get("host_id") != in_id
                assert message.get("host", {}).get("host_id") != in_id
    stop.set()


async def test_a_job_reaching_other_groups_is_visible_with_only_the_users_rows_and_unchangeable(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    world = await build_world(web_rig, client)
    inside, outside = await world.targets("in"), await world.targets("out")
    both = [inside.ids["host_id"], outside.ids["host_id"]]
    created = await client.post("/api/v1/jobs", json={"host_ids": both})
    job_id = created.json()["job_id"]
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    detail = await operator.get(f"/api/v1/jobs/{job_id}")
    assert detail.status_code == 200
    assert [r["host_id"] for r in detail.json()["rows"]] == [inside.ids["host_id"]]
    assert job_id in [j["id"] for j in (await operator.get("/api/v1/jobs")).json()["jobs"]]
    for action in ("cancel", "retry", "rollback"):
        refused = await operator.post(f"/api/v1/jobs/{job_id}/{action}", json={})
        assert refused.status_code == 422, action
        assert "outside your groups" in refused.json()["error"]["message"]
    rows = (await client.get(f"/api/v1/jobs/{job_id}")).json()["rows"]
    assert len(rows) == 2 and all(r["state"] != "cancelled" for r in rows)
    await operator.aclose()


async def test_a_job_reaching_other_groups_shows_a_scoped_user_only_in_scope_roll_ups(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    world = await build_world(web_rig, client)
    inside, outside = await world.targets("in"), await world.targets("out")
    both = [inside.ids["host_id"], outside.ids["host_id"]]
    job_id = (await client.post("/api/v1/jobs", json={"host_ids": both})).json()["job_id"]
    everything = {j["id"]: j for j in (await client.get("/api/v1/jobs")).json()["jobs"]}
    assert sum(everything[job_id]["hosts"].values()) == 2
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    listed = {j["id"]: j for j in (await operator.get("/api/v1/jobs")).json()["jobs"]}
    assert sum(listed[job_id]["hosts"].values()) == 1  # the operator's host only
    refused = await operator.post(f"/api/v1/jobs/{job_id}/cancel", json={})
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert "outside your groups" in message and not any(ch.isdigit() for ch in message)
    # The job ends: the operator's host succeeded, the other one failed.
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE job_hosts SET state = CASE WHEN host_id = %s THEN 'succeeded' ELSE 'failed'"
            " END, finished_at = now() WHERE job_id = %s",
            (inside.ids["host_id"], job_id),
        )
    )
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE jobs SET status = 'partially_failed', finished_at = now() WHERE id = %s",
            (job_id,),
        )
    )
    assert (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "partially_failed"
    assert (await operator.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "succeeded"
    listed = {j["id"]: j for j in (await operator.get("/api/v1/jobs")).json()["jobs"]}
    assert listed[job_id]["status"] == "succeeded"
    mine = (await operator.get("/api/v1/jobs", params={"status": "succeeded"})).json()["jobs"]
    assert job_id in [j["id"] for j in mine]
    await operator.aclose()


async def test_relay_socket_closes_when_an_admin_changes_the_users_groups(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    world = await build_world(web_rig, client)
    await world.targets("in")
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    await operator.aclose()
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    (user,) = [u for u in (await client.get("/api/v1/users")).json()["users"]
               if u["username"] == "operator-user"]  # fmt: skip
    host, port = base_url.removeprefix("https://").split(":")
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(
            host,
            int(port),
            "/api/v1/live",
            use_ssl=browser_context(pki),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", base_url.encode()),
            ],  # fmt: skip
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            changed = await client.patch(f"/api/v1/users/{user['id']}", json={"group_ids": []})
            assert changed.status_code == 200, changed.text
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 4401
    stop.set()


async def open_operator_socket(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> tuple[str, str, trio.Event]:
    """An operator of group "in" and the server: (base url, the operator's cookie, stop)."""
    world = await build_world(web_rig, client)
    await world.targets("in")
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    await operator.aclose()
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    return base_url, cookie, stop


async def closed_code(base_url: str, cookie: str, pki: Pki, change: Any) -> int:
    """Open the relay with ``cookie``, read the snapshot, run ``change``, and return the close
    code the server ends the socket with."""
    host, port = base_url.removeprefix("https://").split(":")
    async with trio_websocket.open_websocket(
        host,
        int(port),
        "/api/v1/live",
        use_ssl=browser_context(pki),
        extra_headers=[
            (b"cookie", f"pm_session={cookie}".encode()),
            (b"origin", base_url.encode()),
        ],  # fmt: skip
    ) as ws:
        assert json.loads(await ws.get_message())["type"] == "snapshot"
        await change()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason is not None
        return int(closed.value.reason.code)


async def test_relay_socket_closes_when_its_session_expires_without_any_announcement(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    base_url, cookie, stop = await open_operator_socket(nursery, web_rig, client, pki)
    web_rig.app.state.relay.recheck_every = 0.05  # the periodic re-check (30 s in service)

    async def expire() -> None:
        await web_rig.db.run(
            lambda c: c.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
        )

    with trio.fail_after(30):
        assert await closed_code(base_url, cookie, pki, expire) == 4401
    stop.set()


async def test_relay_socket_closes_at_once_when_the_cli_changes_the_users_groups(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    from patch_manager.users_cli import users_command

    base_url, cookie, stop = await open_operator_socket(nursery, web_rig, client, pki)
    assert web_rig.app.state.relay.recheck_every == 30.0  # only the notification can do it

    async def cli_set_groups() -> None:
        args = argparse.Namespace(users_command="set-groups", name="operator-user", groups=[])
        await users_command(args, web_rig.db)

    with trio.fail_after(20):
        assert await closed_code(base_url, cookie, pki, cli_set_groups) == 4401
    stop.set()


async def test_relay_forwards_nothing_of_a_host_that_left_the_scope_while_the_re_read_is_pending(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    world = await build_world(web_rig, client)
    inside = await world.targets("in")
    operator = await user_client(web_rig, OPR, [world.group_ids["in"]])
    await operator.aclose()
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await relay_cookie(base_url, pki, "operator-user", PASSWORD)
    host, port = base_url.removeprefix("https://").split(":")
    in_id = inside.ids["host_id"]
    fleet = web_rig.system.fleet
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(
            host,
            int(port),
            "/api/v1/live",
            use_ssl=browser_context(pki),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", base_url.encode()),
            ],  # fmt: skip
        ) as ws:
            snapshot = json.loads(await ws.get_message())
            assert [h["host_id"] for h in snapshot["hosts"]] == [in_id]
            moved = await client.post(
                f"/api/v1/groups/{world.group_ids['in']}/hosts",
                json={"host_ids": [in_id], "member": False},
            )
            assert moved.status_code == 200
            # The unassign has returned: an event of that host now must not reach the operator.
            current = fleet.get(in_id)
            assert current is not None
            fleet.publish(dataclasses.replace(current, last_error="after-the-unassign"))
            while True:
                text = await ws.get_message()
                assert "after-the-unassign" not in text
                if json.loads(text) == {"type": "removed", "host_id": in_id}:
                    break
    stop.set()


# -- the same routes with API tokens (R-7.6) ---------------------------------------------------


def token_allows(key: tuple[str, str], entry: Entry, role: Role, scope: TokenScope) -> bool:
    """What a token of ``scope`` owned by a ``role`` may do: public paths as for anyone (the
    bearer header is not looked at); otherwise only what the scope reaches at all
    (``authz.token_may_request``: the JSON API and /metrics) and what both the role (the
    entry) and the scope allow: read = what every role may (VIEW), operate = + what operators
    do (the WRITERS entries), metrics = /metrics; admin-only actions no scope has."""
    method, path = key
    if is_public(path):
        return role in entry.allowed
    if not token_may_request(scope, method, path) or role not in entry.allowed:
        return False
    if entry.allowed == ALL:
        return True
    if entry.allowed == WRITERS:
        return scope is TokenScope.OPERATE
    if entry.allowed is AUDITORS:
        return scope is TokenScope.READ  # reading the audit log (VIEW_AUDIT)
    return path == "/metrics" and scope is TokenScope.METRICS


async def token_client(
    rig: WebRig, role: Role, group_ids: list[int], scope: TokenScope
) -> httpx2.AsyncClient:
    """A client with no session: only an API token of ``scope`` of a user of ``role``."""
    if role is ADM:
        user_id = 1
    else:
        name = f"{role.value}-{scope.value}-token"
        user = await rig.db.run(create_user, name, "x", role.value)
        await rig.db.run(set_user_groups, user.id, group_ids)
        user_id = user.id
    # Stored directly: the service refuses a scope the role lacks (a metrics token of an
    # operator), but a demoted admin's tokens are exactly that.
    secret = new_secret(PREFIX)
    await rig.db.run(
        lambda c: create_token(
            c, user_id=user_id, name="matrix", scope=scope.value, token_hash=hash_secret(secret),
            hint="pm_", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            group_ids=None, by="matrix",
        )
    )  # fmt: skip
    transport = httpx2.ASGITransport(app=rig.app)
    client = httpx2.AsyncClient(transport=transport, base_url="http://testserver")
    client.headers["authorization"] = f"Bearer {secret}"
    client.headers["x-csrf-token"] = ""  # form bodies carry an empty token: none is needed
    return client


@pytest.mark.parametrize("role", [ADM, OPR, AUD], ids=lambda r: r.value)
async def test_token_matrix_every_route_each_scope_allows_only_scope_and_role(
    web_rig: WebRig, client: httpx2.AsyncClient, role: Role
) -> None:
    """Every route with a token of each scope of a user of each role (no session): allowed
    exactly when ``token_allows``; then the success answer (in scope) or the missing-id
    answer (out of scope); refused with 403 otherwise (``insufficient_scope`` when the scope
    never reaches the route, ``forbidden`` when the role's rights stop it)."""
    world = await build_world(web_rig, client)
    base = {"in": await world.targets("in"), "out": await world.targets("out")}
    failures: list[str] = []
    order = sorted(MATRIX.items(), key=lambda kv: (kv[1].last, kv[1].fresh))
    for scope in TokenScope:
        who = await token_client(web_rig, role, [world.group_ids["in"]], scope)
        for key, entry in order:
            if key[0] == "WS":
                continue  # test_tokens: test_live_socket_refuses_a_bearer_token_over_tls
            allowed = token_allows(key, entry, role, scope)
            for side in ("in", "out") if allowed else ("in",):
                targets = await world.targets(side) if entry.fresh else base[side]
                ids = {
                    **targets.ids,
                    "new_address": world.address(),
                    "new_name": world.name(),
                    "scan_cidr": world.scan_cidr,
                    "token_id": BOGUS,
                }
                owned = "{definition_id" in key[1]  # a definition is its creator's
                if "{user_id" in key[1] or "{session_id" in key[1]:
                    ids["user_id"], ids["session_id"] = await world.logged_in_user()
                response = await send(who, key, entry, ids)
                status = response.status_code
                label = f"{role.value} {scope.value} token {key[0]} {key[1]} ({side}): {status}"
                if status >= 500 or status == 401:
                    failures.append(f"{label} {response.text[:200]}")
                elif not allowed:
                    if status != 403:
                        failures.append(f"{label}, expected 403")
                elif role is not ADM and (
                    (side == "out" and scoped(key, entry)) or (owned and role is not ADM)
                ):
                    hidden = (*SCOPED_KEYS, "definition_id")
                    missing = {k: BOGUS if k in hidden else v for k, v in ids.items()}
                    like = await send(who, key, entry, missing)
                    if (status, error_code(response)) != (like.status_code, error_code(like)):
                        failures.append(f"{label}, but a missing id answers {like.status_code}")
                elif status in (403, 404) and status not in entry.expect:
                    failures.append(f"{label}, expected the request allowed")
                elif status not in success(key, entry):
                    failures.append(f"{label}, expected {sorted(success(key, entry))}")
        await who.aclose()
    assert failures == [], "\n".join(failures)
