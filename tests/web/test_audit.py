"""The audit log seen from the web: every state-changing action through the API leaves one
entry with the right actor, source, request id and target; refusals are recorded; concurrent
actions from several users never fork the chain."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
import trio

from storage import AuditFilter, create_user
from storage.audit import list_entries, verify

from ..conftest import AUDIT_TEST_KEY, fleet_addresses
from .conftest import WebRig, login

pytestmark = pytest.mark.timeout(120)

PASSWORD = "audit-test-password-1"
WINDOW = {
    "name": "nightly",
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
WAIVER = {"owner": "sec", "reason": "vendor fix pending", "expires_at": "2030-01-01T00:00:00Z"}


async def entries(rig: WebRig, **kw: Any) -> list[Any]:
    page, _ = await rig.db.run(list_entries, AuditFilter(limit=1000, **kw))
    return list(reversed(page))  # oldest first


async def user_client(rig: WebRig, name: str, role: str) -> httpx2.AsyncClient:
    hashed = await rig.auth.hash_password(PASSWORD)
    await rig.db.run(create_user, name, hashed, role)
    transport = httpx2.ASGITransport(app=rig.app, client=("127.0.0.7", 4711))
    client = httpx2.AsyncClient(transport=transport, base_url="http://testserver")
    client.headers["x-csrf-token"] = await login(client, PASSWORD, name)
    return client


async def ok(response: Any, *status: int) -> Any:
    assert response.status_code in (status or (200, 201, 202, 204)), response.text
    return response.json() if response.content else None


async def test_every_state_changing_api_action_is_recorded_with_the_acting_user(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    c = client
    group = (await ok(await c.post("/api/v1/groups", json={"name": "web"})))["id"]
    await ok(await c.patch(f"/api/v1/groups/{group}", json={"name": "web2"}))
    address = fleet_addresses(1)
    host = (await ok(await c.post("/api/v1/hosts", json={"name": address})))["id"]
    await ok(await c.post(f"/api/v1/groups/{group}/hosts", json={"host_ids": [host]}))
    await ok(await c.post(f"/api/v1/hosts/{host}/refresh", json={}))
    window = (await ok(await c.post("/api/v1/windows", json={**WINDOW, "host_id": host})))["id"]
    await ok(await c.put(f"/api/v1/windows/{window}", json={**WINDOW, "host_id": host,
                                                            "duration_minutes": 90}))  # fmt: skip
    await ok(await c.delete(f"/api/v1/windows/{window}"))
    blackout = (await ok(await c.post("/api/v1/blackouts", json=BLACKOUT)))["id"]
    await ok(await c.delete(f"/api/v1/blackouts/{blackout}"))
    job_body = {"host_ids": [host], "schedule": "window"}
    job = (await ok(await c.post("/api/v1/jobs", json=job_body)))["job_id"]
    await ok(await c.post(f"/api/v1/jobs/{job}/retry", json={}))
    await ok(await c.post(f"/api/v1/jobs/{job}/cancel", json={}))
    waiver = (await ok(await c.post("/api/v1/waivers", json={**WAIVER, "host_id": host})))["id"]
    await ok(await c.post(f"/api/v1/waivers/{waiver}/revoke", json={}))
    a, b, d, _ = fleet_addresses(4).split(".")
    scan = await ok(await c.post("/api/v1/discovery", json={"cidr": f"{a}.{b}.{d}.0/30"}))
    user = await ok(await c.post("/api/v1/users", json={"username": "carol", "role": "auditor"}))
    uid = user["user"]["id"] if "user" in user else user["id"]
    await ok(await c.patch(f"/api/v1/users/{uid}", json={"role": "operator"}))
    await ok(await c.post(f"/api/v1/users/{uid}/unlock", json={}))
    await ok(await c.post(f"/api/v1/users/{uid}/reset-password", json={}))
    await ok(await c.delete(f"/api/v1/users/{uid}/sessions"))
    await ok(await c.delete(f"/api/v1/hosts/{host}"))
    await ok(await c.delete(f"/api/v1/groups/{group}"))

    expected = [
        ("group.create", f"group:{group}"),
        ("group.rename", f"group:{group}"),
        ("host.add", f"host:{host}"),
        ("group.assign", f"group:{group}"),
        ("host.refresh", f"host:{host}"),
        ("window.create", f"window:{window}"),
        ("window.update", f"window:{window}"),
        ("window.delete", f"window:{window}"),
        ("blackout.create", f"blackout:{blackout}"),
        ("blackout.delete", f"blackout:{blackout}"),
        ("job.create", f"job:{job}"),
        ("job.retry", f"job:{job}"),
        ("job.cancel", f"job:{job}"),
        ("waiver.create", f"waiver:{waiver}"),
        ("waiver.revoke", f"waiver:{waiver}"),
        ("discovery.scan", f"scan:{scan['scan_id']}"),
        ("user.create", "user:carol"),
        ("user.update", "user:carol"),
        ("user.unlock", "user:carol"),
        ("user.password.reset", "user:carol"),
        ("session.revoke_all", "user:carol"),
        ("host.remove", f"host:{host}"),
        ("group.delete", f"group:{group}"),
    ]
    got = [
        e for e in await entries(web_rig, actor="user:admin") if not e.action.startswith("auth.")
    ]
    assert [(e.action, e.target) for e in got] == expected
    assert all(e.outcome == "ok" and e.request_id and e.source for e in got)
    removal = next(e for e in got if e.action == "host.remove")
    assert removal.before["name"] == address
    update = next(e for e in got if e.action == "user.update")
    assert (update.before["role"], update.after["role"]) == ("auditor", "operator")
    assert (await web_rig.db.run(verify, AUDIT_TEST_KEY)).ok


async def test_the_entry_carries_the_request_id_the_response_names(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    response = await client.post("/api/v1/groups", json={"name": "rid"})
    (entry,) = await entries(web_rig, action="group.create")
    assert entry.request_id == response.headers["x-request-id"]


async def test_a_refused_action_is_recorded_as_denied_for_the_user_who_tried(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    auditor = await user_client(web_rig, "watcher", "auditor")
    response = await auditor.post("/api/v1/groups", json={"name": "nope"})
    await auditor.aclose()
    assert response.status_code == 403
    (entry,) = await entries(web_rig, outcome="denied")
    assert (entry.actor, entry.action, entry.target) == (
        "user:watcher",
        "authz.manage_groups",
        "POST /api/v1/groups",
    )
    assert entry.source == "127.0.0.7"
    assert await entries(web_rig, action="group.create") == []


async def test_a_failing_audit_write_fails_the_action_and_changes_nothing(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    def refuse(conn: Any) -> None:
        with conn.transaction():
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$"
            )
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )

    await web_rig.db.run(refuse)
    response = await client.post("/api/v1/groups", json={"name": "unrecorded"})
    assert response.status_code == 503
    groups = (await client.get("/api/v1/groups")).json()
    assert "unrecorded" not in str(groups)


async def test_fifty_parallel_actions_from_five_users_and_the_system_chain_exactly(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    users = [await user_client(web_rig, f"admin{i}", "admin") for i in range(5)]
    from web import audit

    async def act(c: httpx2.AsyncClient, n: int) -> None:
        response = await c.post("/api/v1/groups", json={"name": f"g{n}"})
        assert response.status_code == 201, response.text

    async def system(n: int) -> None:
        await audit.record(web_rig.db, audit.entry("system", "test.tick", f"tick:{n}"))

    before = len(await entries(web_rig))
    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(act, users[n % 5], n)
        for n in range(10):
            nursery.start_soon(system, n)
    for u in users:
        await u.aclose()
    result = await web_rig.db.run(verify, AUDIT_TEST_KEY)
    assert result.ok and result.checked == before + 60
    created = await entries(web_rig, action="group.create")
    assert sorted(e.actor for e in created) == sorted(f"user:admin{n % 5}" for n in range(50))
    assert len({e.target for e in created}) == 50
    assert len(await entries(web_rig, actor="system", action="test.tick")) == 10


async def test_the_api_filters_pages_and_exports_entries_and_records_the_export(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for name in ("a", "b", "c"):
        await ok(await client.post("/api/v1/groups", json={"name": name}))
    first = await ok(await client.get("/api/v1/audit", params={"action": "group.*", "limit": 2}))
    assert first["total"] == 3
    assert [e["after"]["name"] for e in first["entries"]] == ["c", "b"]
    assert first["entries"][0]["actor"] == "user:admin"
    rest = await ok(
        await client.get(
            "/api/v1/audit",
            params={"action": "group.*", "limit": 2, "before_id": first["next_before_id"]},
        )
    )
    assert [e["after"]["name"] for e in rest["entries"]] == ["a"]
    assert rest["next_before_id"] is None
    export = await client.get("/api/v1/audit/export", params={"action": "group.create"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    lines = export.text.strip().split("\r\n")
    assert lines[0].startswith("id,at,actor,source,request_id,action,target,outcome")
    assert len(lines) == 4 and all(",group.create,group:" in line for line in lines[1:])
    (recorded,) = await entries(web_rig, action="audit.export")
    assert recorded.after == {"action": "group.create"}


async def test_bad_filters_are_named_in_a_422(client: httpx2.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/audit", params={"since": "yesterday", "outcome": "maybe", "limit": 0}
    )
    assert response.status_code == 422
    assert set(response.json()["error"]["details"]["fields"]) == {"since", "outcome", "limit"}
    page = await client.get("/audit", params={"until": "soon"})
    assert page.status_code == 422
    assert "until" in page.text


async def test_verify_now_names_the_first_broken_entry_and_is_recorded(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for name in ("x", "y"):
        await ok(await client.post("/api/v1/groups", json={"name": name}))
    good = await ok(await client.post("/api/v1/audit/verify"))
    assert good["ok"] is True and good["broken_id"] is None
    first = (await entries(web_rig, action="group.create"))[0]

    def tamper(conn: Any) -> None:
        conn.execute("UPDATE audit_entries SET target = 'group:999' WHERE id = %s", (first.id,))

    await web_rig.db.run(tamper)
    bad = await ok(await client.post("/api/v1/audit/verify", json={}))
    assert (bad["ok"], bad["broken_id"]) == (False, first.id)
    assert bad["problem"].startswith(f"entry {first.id} does not match its MAC")
    checks = await entries(web_rig, action="audit.verify")
    assert [c.outcome for c in checks] == ["ok", "failed"]
    assert checks[1].detail == bad["problem"]


async def test_the_audit_page_shows_entries_and_the_verify_button_reports(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await ok(await client.post("/api/v1/groups", json={"name": "shown"}))
    page = await client.get("/audit", params={"action": "group.create"})
    assert page.status_code == 200
    assert "group.create" in page.text and "Not verified yet." in page.text
    assert 'href="/audit" aria-current="page"' in page.text
    csrf = client.headers["x-csrf-token"]
    done = await client.post("/audit/verify", data={"csrf_token": csrf})
    assert done.status_code == 303
    assert "verifies" in done.headers["location"]
    again = await client.get("/audit")
    assert 'id="verify-status" class="healthy"' in again.text


async def test_certificate_and_enrolment_actions_are_recorded_with_their_actors(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Any
) -> None:
    from patch_manager.runtime import record_certificates

    from .test_pki_enrol import agent_client, request_for

    issued = pki.ca.issue_agent(["audit1.example.com"])
    await record_certificates(web_rig.db, [issued.record])
    serial = issued.record.serial_hex
    await ok(await client.post("/api/v1/certificates/revoke", json={"serial": serial}))
    renewed = await ok(await client.post("/api/v1/certificates/renew", json={"kind": "web_server"}))
    tokens, ids = [], []
    for n, machine in enumerate(("m-audit-1", "m-audit-2")):
        async with agent_client(web_rig, f"127.0.0.{60 + n}") as agent:
            asked = await agent.post(
                "/api/v1/enroll", json=request_for(fleet_addresses(1), machine)
            )
            assert asked.status_code == 202, asked.text
            tokens.append(asked.json()["polling_token"])
    pending = (await ok(await client.get("/api/v1/enrolments")))["enrolments"]
    ids = sorted(e["id"] for e in pending)
    approved = await ok(await client.post(f"/api/v1/enrolments/{ids[0]}/approve"))
    await ok(await client.post(f"/api/v1/enrolments/{ids[1]}/deny"))
    async with agent_client(web_rig, "127.0.0.70") as agent:
        bundle = (await agent.get(f"/api/v1/enroll/status/{tokens[0]}")).json()
    assert bundle["status"] == "approved"

    def of(action: str, got: list[Any]) -> list[tuple[str, str]]:
        return [(e.actor, e.target) for e in got if e.action == action]

    got = await entries(web_rig)
    assert of("certificate.revoke", got) == [("user:admin", f"certificate:{serial}")]
    assert of("certificate.renew", got) == [("user:admin", f"certificate:{renewed['serial']}")]
    assert of("enrolment.approve", got) == [("user:admin", f"enrolment:{ids[0]}")]
    assert of("enrolment.deny", got) == [("user:admin", f"enrolment:{ids[1]}")]
    assert of("host.add", got) == [("user:admin", f"host:{approved['host_id']}")]
    (issue,) = [e for e in got if e.action == "certificate.issue"]
    assert issue.actor == "system" and issue.after["enrolment_id"] == ids[0]
