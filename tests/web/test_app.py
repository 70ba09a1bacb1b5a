"""Handlers over the ASGI app: authentication everywhere, CSRF, the error envelope, forms,
the JSON API, OpenAPI and /metrics."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
import trio
from starlette.routing import Mount, Route, WebSocketRoute

from simulator import Fleet
from web.openapi import OPERATIONS

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(60)


def concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+(:int)?\}", "1", path)


async def test_every_route_needs_a_session(web_rig: WebRig, anonymous: httpx2.AsyncClient) -> None:
    public = {"/api/v1/health", "/login", "/api/v1/pki/crl.pem", "/api/v1/enroll",
              "/api/v1/pki/repo-config",
              "/api/v1/enroll/status/{token}",
              # the login's second step: it needs the pending login's cookie (test_mfa.py)
              "/login/mfa", "/login/webauthn/options", "/login/webauthn",
              # single sign-on: the redirect to the provider and its return (test_sso.py)
              "/sso/login", "/sso/callback",
              # API tokens: the exchange takes the token itself, the key set is public (test_jwt.py)
              "/api/v1/auth/token", "/api/v1/auth/jwks.json"}  # fmt: skip
    checked = 0
    for route in web_rig.app.routes:
        if isinstance(route, Mount | WebSocketRoute):
            continue
        assert isinstance(route, Route)
        if route.path in public:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            response = await anonymous.request(method, concrete(route.path))
            checked += 1
            if route.path.startswith("/api/") or route.path == "/metrics":
                assert_envelope(response, 401, "unauthorized")
            else:
                assert response.status_code == 303, (method, route.path)
                assert response.headers["location"].startswith("/login?next=")
    assert checked >= 40
    health = await anonymous.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert (await anonymous.get("/static/app.css")).status_code == 200


async def test_wrong_password_and_expired_login_form(
    web_rig: WebRig, anonymous: httpx2.AsyncClient
) -> None:
    page = await anonymous.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    wrong = await anonymous.post(
        "/login", data={"username": "admin", "password": "nope", "login_token": token[1]}
    )
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    forged = await anonymous.post(
        "/login", data={"username": "admin", "password": web_rig.password, "login_token": "forged"}
    )
    assert forged.status_code == 400 and "expired" in forged.text
    assert "pm_session" not in anonymous.cookies


async def test_csrf_is_enforced(client: httpx2.AsyncClient) -> None:
    headers = {"x-csrf-token": "wrong", "content-type": "application/json"}
    response = await client.post("/api/v1/groups", content=b'{"name": "web"}', headers=headers)
    assert_envelope(response, 403, "csrf_failed")
    page = await client.get("/groups")
    token = form_token(page.text)
    del client.headers["x-csrf-token"]
    refused = await client.post("/groups", data={"name": "web"})
    assert_envelope(refused, 403, "csrf_failed")
    accepted = await client.post("/groups", data={"name": "web", "csrf_token": token})
    assert accepted.status_code == 303
    assert "web" in (await client.get("/groups")).text


async def test_error_envelope_is_the_same_everywhere(client: httpx2.AsyncClient) -> None:
    assert_envelope(await client.get("/api/v1/hosts/999"), 404, "not_found")
    assert_envelope(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_envelope(await client.post("/api/v1/hosts", content=b"{}"), 415)
    assert_envelope(
        await client.post(
            "/api/v1/hosts", content=b"{bad", headers={"content-type": "application/json"}
        ),
        400,
    )
    error = assert_envelope(
        await client.post("/api/v1/hosts", json={"name": "", "port": 99999, "groups": ["b d"]}),
        422,
        "validation_error",
    )
    assert set(error["details"]["fields"]) == {"name", "port", "groups"}
    assert_envelope(await client.get("/api/v1/hosts?health=sick&limit=0"), 422)
    assert_envelope(await client.delete("/api/v1/groups/12345"), 404)


async def test_invalid_host_form_re_renders_with_messages(client: httpx2.AsyncClient) -> None:
    page = await client.get("/hosts")
    token = form_token(page.text)
    response = await client.post(
        "/hosts/add", data={"name": "not a host!", "port": "x", "csrf_token": token}
    )
    assert response.status_code == 422
    assert "must be a whole number" in response.text
    assert 'value="not a host!"' in response.text  # what was typed is kept
    response = await client.post("/hosts/add", data={"name": "bad_name!", "csrf_token": token})
    assert response.status_code == 422
    assert "neither an IP address nor a valid FQDN" in response.text


async def test_api_hosts_groups_and_detail(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(3)
    created = []
    for agent in fleet.agents:
        response = await client.post(
            "/api/v1/hosts", json={"name": agent.address, "display_name": agent.profile.hostname}
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    duplicate = await client.post("/api/v1/hosts", json={"name": fleet.agents[0].address})
    assert_envelope(duplicate, 409)
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda snaps: len(snaps) == 3 and all(s.health.value == "healthy" for s in snaps)
        )
    await web_rig.system.sink.flush()
    listing = (await client.get("/api/v1/hosts?sort=name&health=healthy")).json()
    assert listing["total"] == 3
    group = (await client.post("/api/v1/groups", json={"name": "web"})).json()
    ids = [h["id"] for h in created[:2]]
    assert (
        await client.post(f"/api/v1/groups/{group['id']}/hosts", json={"host_ids": ids})
    ).json() == {"changed": 2}
    in_group = (await client.get("/api/v1/hosts?group=web")).json()
    assert sorted(h["id"] for h in in_group["hosts"]) == sorted(ids)
    detail = (await client.get(f"/api/v1/hosts/{ids[0]}")).json()
    assert detail["live"]["health"] == "healthy"
    assert detail["policy"]["origins"]["health_interval_s"] == "global"
    assert detail["state"]["hostname"] == fleet.agents[0].profile.hostname
    patches = (await client.get(f"/api/v1/hosts/{ids[0]}/patches")).json()["patches"]
    assert {p["name"] for p in patches} == set(fleet.agents[0].profile.upgradable)
    assert (await client.post(f"/api/v1/hosts/{ids[0]}/refresh")).status_code == 202
    page = await client.get(f"/hosts/{ids[0]}")
    assert page.status_code == 200 and fleet.agents[0].profile.hostname in page.text
    assert (await client.delete(f"/api/v1/hosts/{ids[0]}")).status_code == 204
    assert_envelope(await client.get(f"/api/v1/hosts/{ids[0]}"), 404)


async def test_openapi_describes_exactly_the_api_routes(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    served = set()
    for route in web_rig.app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/v1/"):
            path = re.sub(r"\{([a-z_]+):int\}", r"{\1}", route.path)
            for method in (route.methods or set()) - {"HEAD"}:
                served.add((method.lower(), path))
    assert served == set(OPERATIONS)
    assert set(document["paths"]) == {path for _, path in OPERATIONS}


async def test_metrics_in_prometheus_format(client: httpx2.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in (
        "patchmgr_actors",
        "patchmgr_polls_total",
        "patchmgr_poll_seconds_bucket",
        "patchmgr_relay_subscribers",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in response.text or name in response.text


async def test_logout_ends_the_session(client: httpx2.AsyncClient) -> None:
    token = form_token((await client.get("/")).text)
    response = await client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert_envelope(await client.get("/api/v1/hosts"), 401)
