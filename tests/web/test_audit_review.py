"""The audit log's review findings (F13a): who may read it (scope), actions whose audit write
fails, system certificate renewals, numbers the chain must hash as the database returns them,
and logout."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from ca import CertKind
from storage import AuditFilter, AuditWriteFailed, create_user, get_user, set_user_groups
from storage.audit import list_entries, record, verify
from web import audit
from web.authz import Principal, Role, TokenScope

from ..conftest import AUDIT_TEST_KEY
from ..storage.test_audit import _e
from .conftest import WebRig, assert_envelope, form_token, login, totp_code
from .test_mfa import stale_second_factor

pytestmark = pytest.mark.timeout(120)

PASSWORD = "audit-review-password-1"


async def entries(rig: WebRig, **kw: Any) -> list[Any]:
    page, _ = await rig.db.run(list_entries, AuditFilter(limit=1000, **kw))
    return list(reversed(page))  # oldest first


async def as_user(rig: WebRig, name: str, role: str, groups: list[int]) -> httpx2.AsyncClient:
    hashed = await rig.auth.hash_password(PASSWORD)
    user = await rig.db.run(create_user, name, hashed, role)
    await rig.db.run(set_user_groups, user.id, groups)
    transport = httpx2.ASGITransport(app=rig.app, client=("127.0.0.9", 4711))
    c = httpx2.AsyncClient(transport=transport, base_url="http://testserver")
    c.headers["x-csrf-token"] = await login(c, PASSWORD, name)
    return c


async def refuse_audit_writes(rig: WebRig) -> None:
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

    await rig.db.run(refuse)


# -- H4: the audit log names every host, so only principals who see every host read it -------


async def test_a_group_scoped_auditor_and_a_group_restricted_token_may_not_read_the_audit_log(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    group = (await client.post("/api/v1/groups", json={"name": "mine"})).json()["id"]
    scoped = await as_user(web_rig, "scopedaud", "auditor", [group])
    unscoped = await as_user(web_rig, "wideaud", "auditor", [])
    try:
        assert (await scoped.get("/api/v1/audit")).status_code == 403
        assert (await scoped.get("/api/v1/audit/export")).status_code == 403
        assert (await scoped.get("/audit")).status_code == 403
        assert (await unscoped.get("/api/v1/audit")).status_code == 200
    finally:
        await scoped.aclose()
        await unscoped.aclose()
    made = await client.post(
        "/api/v1/tokens",
        json={"name": "ro", "scope": "read", "expires_days": 5, "group_ids": [group]},
    )
    restricted = made.json()["token"]
    made = await client.post(
        "/api/v1/tokens", json={"name": "ro-all", "scope": "read", "expires_days": 5}
    )
    whole = made.json()["token"]
    transport = httpx2.ASGITransport(app=web_rig.app, client=("127.0.0.9", 1))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as t:
        t.headers["authorization"] = f"Bearer {restricted}"
        assert (await t.get("/api/v1/audit")).status_code == 403
        t.headers["authorization"] = f"Bearer {whole}"
        assert (await t.get("/api/v1/audit")).status_code == 200


# -- H3 / H6: certificate renewals ---------------------------------------------------------


async def test_a_system_certificate_renewal_is_recorded_as_the_system(web_rig: WebRig) -> None:
    record_ = await web_rig.system.certificates.renew(CertKind.WEB_SERVER)
    renewals = await entries(web_rig, action="certificate.renew")
    assert [(e.actor, e.target) for e in renewals] == [
        ("system", f"certificate:{record_.serial_hex}")
    ]


async def test_a_renewal_whose_audit_write_fails_says_it_was_done_but_not_recorded(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await refuse_audit_writes(web_rig)
    response = await client.post("/api/v1/certificates/renew", json={"kind": "web_server"})
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "nothing was changed" not in message
    assert "not recorded" in message


# -- M4: logout ---------------------------------------------------------------------------


async def test_logout_ends_the_session_even_when_its_audit_write_fails(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await refuse_audit_writes(web_rig)
    response = await client.post("/logout", data={"csrf_token": client.headers["x-csrf-token"]})
    assert response.status_code == 303
    after = await client.get("/api/v1/hosts")
    assert after.status_code == 401


# -- H7: numbers as jsonb returns them -------------------------------------------------------


async def test_large_integral_floats_and_non_finite_numbers_verify(web_rig: WebRig) -> None:
    for value in (1e16, 1.5e20, 0.1, 1e-7, float("nan"), float("inf"), -0.0):
        await record(web_rig.db, _e(0).but(after={"v": value, "list": [value]}))
    result = await web_rig.db.run(lambda conn: verify(conn, AUDIT_TEST_KEY))
    assert result.ok, result.problem
    assert result.checked >= 7  # and the rig's own entries


# -- H3 / M2: a recovery code is used up only with its entry, named by the user --------------


async def test_a_recovery_code_is_not_used_up_when_its_entry_cannot_be_written(
    web_rig: WebRig,
) -> None:
    admin = await web_rig.db.run(get_user, "admin")
    assert admin is not None
    codes = await web_rig.auth.mfa.new_recovery_codes(admin.id)
    await refuse_audit_writes(web_rig)
    with pytest.raises(AuditWriteFailed):
        await web_rig.auth.mfa.check_code(admin.id, codes[0])
    await web_rig.db.run(lambda c: c.execute("DROP TRIGGER refuse ON audit_entries"))
    assert await web_rig.auth.mfa.check_code(admin.id, codes[0]) == "recovery"
    used = await entries(web_rig, action="auth.mfa.recovery_used")
    assert [(e.actor, e.target) for e in used] == [("user:admin", "user:admin")]


async def test_a_reauthentication_whose_entry_cannot_be_written_confirms_nothing(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await stale_second_factor(web_rig, client)
    await refuse_audit_writes(web_rig)
    page = await client.get("/security")
    refused = await client.post(
        "/reauth",
        data={"csrf_token": form_token(page.text), "code": totp_code(web_rig.totp),
              "next": "/users"},
    )  # fmt: skip
    assert refused.status_code == 503
    await web_rig.db.run(lambda c: c.execute("DROP TRIGGER refuse ON audit_entries"))
    still = await client.post("/api/v1/users", json={"username": "later", "role": "auditor"})
    assert_envelope(still, 403, "reauth_required")


# -- M2: one way to name users and tokens ---------------------------------------------------


def test_a_token_actor_names_the_token_and_its_owner() -> None:
    who = Principal("alice", 3, Role.ADMIN, token_scope=TokenScope.READ, token_id=5,
                    token_name="ci")  # fmt: skip
    assert audit.actor_of(who) == "token:5:ci@alice"


async def test_a_wrong_second_factor_unlock_and_revoke_all_target_user_name(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    admin = await web_rig.db.run(get_user, "admin")
    assert admin is not None
    pending = await web_rig.auth.begin_pending(admin, "127.0.0.9", "test", "/")
    await web_rig.auth.second_step(pending, "000000", "127.0.0.9")
    (failed,) = await entries(web_rig, action="auth.login", outcome="failed")
    assert failed.target == "user:admin"
    made = await client.post("/api/v1/users", json={"username": "dora", "role": "auditor"})
    dora = made.json()["user"]["id"]
    assert (await client.post(f"/api/v1/users/{dora}/unlock")).status_code == 200
    assert (await client.delete(f"/api/v1/users/{dora}/sessions")).status_code in (200, 204)
    for action in ("user.unlock", "session.revoke_all"):
        (done,) = await entries(web_rig, action=action)
        assert done.target == "user:dora", action


# -- H2: the newest entry's id for monitoring outside the database ---------------------------


async def test_metrics_show_the_id_of_the_newest_audit_entry(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await client.post("/api/v1/groups", json={"name": "counted"})
    newest = (await entries(web_rig))[-1].id
    text = (await client.get("/metrics")).text
    assert f"patchmgr_audit_head_id {newest}\n" in text


# -- M1: what was not recorded ----------------------------------------------------------------


async def test_a_json_report_download_is_recorded(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    response = await client.get("/api/v1/reports/compliance")
    assert response.status_code == 200, response.text
    (download,) = await entries(web_rig, action="report.download")
    assert (download.target, download.after["format"]) == ("report:compliance", "json")


async def test_an_enrolment_request_is_recorded_from_its_source(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    from ..conftest import fleet_addresses
    from .test_pki_enrol import agent_client, request_for

    async with agent_client(web_rig, "127.0.0.70") as agent:
        asked = await agent.post("/api/v1/enroll", json=request_for(fleet_addresses(1), "m-rv"))
        assert asked.status_code == 202, asked.text
    (requested,) = await entries(web_rig, action="enrolment.request")
    assert (requested.actor, requested.source) == ("anonymous", "127.0.0.70")
    assert requested.target.startswith("enrolment:")
    assert requested.after["machine_id"] == "m-rv"


# -- L3: what a rename or delete changed --------------------------------------------------


async def test_a_group_rename_and_delete_record_what_was_there_before(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    group = (await client.post("/api/v1/groups", json={"name": "old-name"})).json()["id"]
    renamed = await client.patch(f"/api/v1/groups/{group}", json={"name": "new-name"})
    assert renamed.status_code in (200, 204), renamed.text
    assert (await client.delete(f"/api/v1/groups/{group}")).status_code in (200, 204)
    (rename,) = await entries(web_rig, action="group.rename")
    (delete,) = await entries(web_rig, action="group.delete")
    assert (rename.before, rename.after) == ({"name": "old-name"}, {"name": "new-name"})
    assert delete.before == {"name": "new-name"}
