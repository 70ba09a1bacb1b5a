"""API tokens (R-7.6): created shown once and stored hashed, used as Bearer without cookies or
CSRF, scoped, expiring, revocable on the next request, never beyond the owner's current rights;
Prometheus scrapes /metrics with a metrics token over real TLS."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import trio
import trio_websocket
from asgi_lifespan import LifespanManager

from storage import PrincipalRow, create_user, load_principal, set_user_groups, update_user
from storage.audit import AuditFilter, list_entries
from web.authz import Principal
from web.handle import InvalidInput
from web.tokens import Tokens

from ..conftest import Pki
from .conftest import WebRig, form_token, login
from .test_relay import browser_context, serve

pytestmark = pytest.mark.timeout(120)

PASSWORD = "token-test-password-1"


@pytest.fixture
async def app(web_rig: WebRig) -> AsyncIterator[Any]:
    async with LifespanManager(web_rig.app) as manager:
        yield manager.app


def bearer(app: Any, token: str) -> httpx2.AsyncClient:
    """A client with no cookies: only the token."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"authorization": f"Bearer {token}"},
    )


def tokens_of(rig: WebRig) -> Tokens:
    tokens = rig.app.state.tokens
    assert isinstance(tokens, Tokens)
    return tokens


async def owner(rig: WebRig, user_id: int) -> PrincipalRow:
    row = await rig.db.run(load_principal, user_id)
    assert row is not None
    return row


async def make_user(rig: WebRig, name: str, role: str, groups: list[int]) -> int:
    hashed = await rig.auth.hash_password(PASSWORD)
    user = await rig.db.run(create_user, name, hashed, role)
    await rig.db.run(set_user_groups, user.id, groups)
    return int(user.id)


async def token_for(
    rig: WebRig, user_id: int, scope: str, *, days: int = 30, groups: list[int] | None = None
) -> str:
    tokens = tokens_of(rig)
    row = await owner(rig, user_id)
    me = Principal.of(row, operators_see_ungrouped=False)
    _, secret = await tokens.create(
        me, owner=row, name=f"{scope} test", scope=scope, days=days, group_ids=groups
    )
    return secret


async def test_token_created_through_the_api_is_shown_once_and_stored_only_hashed(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    created = await client.post(
        "/api/v1/tokens", json={"name": "ci", "scope": "read", "expires_days": 7}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    assert secret.startswith("pm_") and len(secret) > 40
    listed = await client.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert secret not in listed.text
    (item,) = listed.json()["tokens"]
    assert item["name"] == "ci" and item["scope"] == "read" and item["last_used_at"] is None
    stored = await web_rig.db.run(
        lambda c: c.execute(
            "SELECT token_hash FROM api_tokens WHERE id = %s", (item["id"],)
        ).fetchone()[0]  # fmt: skip
    )
    assert bytes(stored) == hashlib.sha256(secret.encode()).digest()
    async with bearer(web_rig.app, secret) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200
    again = (await client.get("/api/v1/tokens")).json()["tokens"][0]
    assert again["last_used_at"] is not None


async def test_read_token_reads_without_cookie_or_csrf_and_is_refused_every_change(
    web_rig: WebRig, app: Any
) -> None:
    secret = await token_for(web_rig, 1, "read")
    async with bearer(app, secret) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200
        refused = await http.post("/api/v1/hosts", json={"name": "127.0.0.1"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        assert (await http.get("/metrics")).status_code == 403
        page = await http.get("/hosts")
        assert page.status_code == 403  # bearer credentials are for the JSON API only


async def test_operate_token_of_an_admin_deploys_without_csrf_but_cannot_manage_hosts(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host = await client.post("/api/v1/hosts", json={"name": "127.0.0.1"})
    assert host.status_code == 201, host.text
    secret = await token_for(web_rig, 1, "operate")
    async with bearer(web_rig.app, secret) as http:
        job = await http.post("/api/v1/jobs", json={"host_ids": [host.json()["id"]]})
        assert job.status_code == 201, job.text
        # the admin may register hosts, an operate token may not (operators may not)
        refused = await http.post("/api/v1/hosts", json={"name": "127.0.0.2"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"


async def test_tokens_never_reach_token_management_the_profile_or_the_live_socket(
    web_rig: WebRig, app: Any
) -> None:
    secret = await token_for(web_rig, 1, "operate")
    async with bearer(app, secret) as http:
        for method, path in [
            ("GET", "/api/v1/tokens"),
            ("POST", "/api/v1/tokens"),
            ("POST", "/api/v1/profile/password"),
            ("GET", "/api/v1/live"),
        ]:
            answer = await http.request(method, path, json={})
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "insufficient_scope"


async def test_revoked_token_is_refused_on_its_next_request(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    created = await client.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
    secret, token_id = created.json()["token"], created.json()["item"]["id"]
    async with bearer(web_rig.app, secret) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200
        assert (await client.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
        refused = await http.get("/api/v1/hosts")
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "the token has been revoked"
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_unknown_malformed_and_empty_bearer_credentials_are_one_line_401s(
    web_rig: WebRig, app: Any
) -> None:
    for credential in ["pm_not-a-token", "garbage", "a.b.c", ""]:
        async with bearer(app, credential) as http:
            answer = await http.get("/api/v1/hosts")
            assert answer.status_code == 401, credential
            assert answer.json()["error"]["code"] == "invalid_token"


async def test_expired_token_is_refused_once_the_clock_passes_its_expiry(
    web_rig: WebRig, app: Any
) -> None:
    tokens = tokens_of(web_rig)
    start = dt.datetime.now(dt.UTC)
    now = [start]
    tokens.clock = lambda: now[0]
    secret = await token_for(web_rig, 1, "read", days=1)
    async with bearer(app, secret) as http:
        now[0] = start + dt.timedelta(hours=23, minutes=59)
        assert (await http.get("/api/v1/hosts")).status_code == 200
        now[0] = start + dt.timedelta(days=1, seconds=1)
        refused = await http.get("/api/v1/hosts")
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "the token has expired"


async def test_demoted_owners_token_shrinks_and_a_disabled_owners_token_stops(
    web_rig: WebRig, app: Any
) -> None:
    user_id = await make_user(web_rig, "opr", "operator", [])
    secret = await token_for(web_rig, user_id, "operate")
    async with bearer(app, secret) as http:
        preview = await http.post("/api/v1/deploy/preview", json={"host_ids": [1]})
        assert preview.status_code != 403, preview.text
        await web_rig.db.run(lambda c: update_user(c, user_id, by="admin", role="auditor"))
        demoted = await http.post("/api/v1/deploy/preview", json={"host_ids": [1]})
        assert demoted.status_code == 403
        assert demoted.json()["error"]["code"] == "forbidden"
        assert (await http.get("/api/v1/hosts")).status_code == 200
        await web_rig.db.run(lambda c: update_user(c, user_id, by="admin", state="disabled"))
        stopped = await http.get("/api/v1/hosts")
        assert stopped.status_code == 401
        assert stopped.json()["error"]["message"] == "the token's owner is disabled"


async def test_group_restricted_token_sees_only_its_groups_within_the_owners(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = {}
    for name in ("a", "b"):
        group = await client.post("/api/v1/groups", json={"name": name})
        ids[name] = group.json()["id"]
    hosts = {}
    for n, name in enumerate(("a", "b")):
        host = await client.post("/api/v1/hosts", json={"name": f"127.0.0.{n + 1}",
                                                         "groups": [name]})  # fmt: skip
        hosts[name] = host.json()["id"]
    admin_a = await token_for(web_rig, 1, "read", groups=[ids["a"]])
    async with bearer(web_rig.app, admin_a) as http:
        listed = (await http.get("/api/v1/hosts")).json()["hosts"]
        assert [h["id"] for h in listed] == [hosts["a"]]
        assert (await http.get(f"/api/v1/hosts/{hosts['b']}")).status_code == 404
    # an operator of group a asking for group b: refused at creation
    user_id = await make_user(web_rig, "opa", "operator", [ids["a"]])
    row = await owner(web_rig, user_id)
    me = Principal.of(row, operators_see_ungrouped=False)
    with pytest.raises(InvalidInput) as refused:
        await tokens_of(web_rig).create(
            me, owner=row, name="x", scope="read", days=1, group_ids=[ids["b"]]
        )
    assert "group_ids" in refused.value.fields
    # restricted to a; the owner then loses a: the token sees nothing
    secret = await token_for(web_rig, user_id, "read", groups=[ids["a"]])
    async with bearer(web_rig.app, secret) as http:
        assert len((await http.get("/api/v1/hosts")).json()["hosts"]) == 1
        await web_rig.db.run(set_user_groups, user_id, [ids["b"]])
        assert (await http.get("/api/v1/hosts")).json()["hosts"] == []


async def test_token_creation_refuses_bad_scope_expiry_and_scopes_the_role_lacks(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for body, field in [
        ({"name": "x", "scope": "admin"}, "scope"),
        ({"name": "x", "scope": "read", "expires_days": 91}, "expires_days"),
        ({"name": "x", "scope": "read", "expires_days": 0}, "expires_days"),
        ({"name": "", "scope": "read"}, "name"),
    ]:
        answer = await client.post("/api/v1/tokens", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.json()["error"]["details"]["fields"], answer.text
    user_id = await make_user(web_rig, "aud", "auditor", [])
    row = await owner(web_rig, user_id)
    with pytest.raises(InvalidInput) as refused:
        await tokens_of(web_rig).create(
            Principal.of(row, operators_see_ungrouped=False), owner=row, name="m",
            scope="metrics", days=1, group_ids=None,
        )  # fmt: skip
    assert refused.value.fields == {"scope": "the auditor role has no metrics rights"}


async def test_users_revoke_only_their_own_tokens_and_admins_anyones(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    user_id = await make_user(web_rig, "opx", "operator", [])
    own = await client.post("/api/v1/tokens", json={"name": "admin's", "scope": "read"})
    other = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=web_rig.app), base_url="http://testserver"
    )
    async with other:
        other.headers["x-csrf-token"] = await login(other, PASSWORD, "opx")
        theirs = await other.post("/api/v1/tokens", json={"name": "mine", "scope": "operate"})
        assert theirs.status_code == 201, theirs.text
        admins = own.json()["item"]["id"]
        assert (await other.delete(f"/api/v1/tokens/{admins}")).status_code == 404
        assert [t["name"] for t in (await other.get("/api/v1/tokens")).json()["tokens"]] == ["mine"]
        assert (await other.get("/api/v1/tokens?all=true")).status_code == 403
    everyone = (await client.get("/api/v1/tokens?all=true")).json()["tokens"]
    assert {t["username"] for t in everyone} == {"admin", "opx"}
    theirs_id = theirs.json()["item"]["id"]
    assert (await client.delete(f"/api/v1/tokens/{theirs_id}")).status_code == 204
    assert user_id


async def test_prometheus_scrapes_metrics_over_tls_with_a_metrics_token_and_not_a_read_one(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    metrics_token = await token_for(web_rig, 1, "metrics")
    read_token = await token_for(web_rig, 1, "read")
    base, stop = await serve(nursery, web_rig, pki)
    try:
        async with httpx2.AsyncClient(verify=browser_context(pki), base_url=base) as http:
            scrape = await http.get(
                "/metrics",
                headers={"authorization": f"Bearer {metrics_token}",
                         "accept": "text/plain;version=0.0.4"},
            )  # fmt: skip
            assert scrape.status_code == 200, scrape.text
            assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE patchmgr_hosts gauge" in scrape.text
            assert http.cookies.get("pm_session") is None
            refused = await http.get("/metrics", headers={"authorization": f"Bearer {read_token}"})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "insufficient_scope"
            api = await http.get(
                "/api/v1/hosts", headers={"authorization": f"Bearer {metrics_token}"}
            )
            assert api.status_code == 403
    finally:
        stop.set()


async def test_token_create_revoke_and_refused_use_are_audited_without_the_secret(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    created = await client.post("/api/v1/tokens", json={"name": "audited", "scope": "read"})
    secret, token_id = created.json()["token"], created.json()["item"]["id"]
    async with bearer(web_rig.app, secret) as http:
        assert (await http.get("/metrics")).status_code == 403  # refused: out of scope
    assert (await client.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
    entries, _ = await web_rig.db.run(list_entries, AuditFilter(action="token."))
    seen = [(e.action, e.actor, e.target, e.outcome) for e in reversed(entries)]
    assert seen == [
        ("token.create", "user:admin", f"token:{token_id}", "ok"),
        ("token.use", f"token:{token_id}:audited", "GET /metrics", "denied"),
        ("token.revoke", "user:admin", f"token:{token_id}", "ok"),
    ]
    assert all(secret not in repr(e) for e in entries)
    assert entries[-1].after["scope"] == "read"


async def test_live_socket_refuses_a_bearer_token_over_tls(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    secret = await token_for(web_rig, 1, "operate")
    base, stop = await serve(nursery, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    try:
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket(
                host, int(port), "/api/v1/live", use_ssl=browser_context(pki),
                extra_headers=[(b"authorization", f"Bearer {secret}".encode())],
            ):  # fmt: skip
                pass
        assert rejected.value.status_code == 403
    finally:
        stop.set()


async def test_tokens_page_creates_shows_the_secret_once_lists_and_revokes(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    profile = await client.get("/profile")
    assert 'href="/tokens"' in profile.text
    page = await client.get("/tokens")
    assert page.status_code == 200
    csrf = form_token(page.text)
    unnamed = await client.post("/tokens", data={"csrf_token": csrf, "name": "", "scope": "read"})
    assert unnamed.status_code == 422
    assert 'id="token-name-error">' in unnamed.text
    bad = await client.post(
        "/tokens", data={"csrf_token": csrf, "name": "x", "scope": "read", "expires_days": "999"}
    )
    assert bad.status_code == 422
    assert 'id="token-days-error">between 1 and 90 days' in bad.text
    assert 'value="x"' in bad.text  # the input is kept
    created = await client.post(
        "/tokens",
        data={"csrf_token": csrf, "name": "grafana", "scope": "read", "expires_days": "10"},
    )
    assert created.status_code == 201, created.text
    secret = re.search(r'id="token-secret">(pm_[^<]+)<', created.text)
    assert secret is not None
    listed = await client.get("/tokens")
    assert secret[1] not in listed.text
    assert "grafana" in listed.text and secret[1][:9] in listed.text
    (item,) = (await client.get("/api/v1/tokens")).json()["tokens"]
    async with bearer(web_rig.app, secret[1]) as http:
        assert (await http.get("/api/v1/hosts")).status_code == 200
        revoked = await client.post(f"/tokens/{item['id']}/revoke", data={"csrf_token": csrf})
        assert revoked.status_code == 303
        assert (await http.get("/api/v1/hosts")).status_code == 401
