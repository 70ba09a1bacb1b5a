"""Users: the admin's API and pages, the bad-input list of issue 11, sessions."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import trio
import trio_websocket

from storage import prune_sessions

from ..conftest import Pki
from .conftest import WebRig, assert_envelope
from .test_login import STRONG, first_login, make_user
from .test_relay import browser_context, serve, session_cookie


@pytest.fixture
async def other(web_rig: WebRig) -> AsyncIterator[httpx2.AsyncClient]:
    """A second browser (another source address)."""
    web_rig.auth.throttle.cap = 0.0
    transport = httpx2.ASGITransport(app=web_rig.app, client=("10.0.1.1", 4000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def user_id(admin: httpx2.AsyncClient, name: str) -> int:
    users = (await admin.get("/api/v1/users")).json()["users"]
    return int(next(u["id"] for u in users if u["username"] == name))


async def test_user_names_are_unique_regardless_of_case(client: httpx2.AsyncClient) -> None:
    created = await client.post("/api/v1/users", json={"username": "Alice", "role": "auditor"})
    assert created.status_code == 201
    assert created.json()["user"]["username"] == "alice"
    assert created.json()["user"]["must_change_password"] is True
    again = await client.post("/api/v1/users", json={"username": "ALICE", "role": "operator"})
    assert_envelope(again, 409, "conflict")


async def test_bad_user_bodies_are_422_naming_the_field(client: httpx2.AsyncClient) -> None:
    cases = [
        ({"username": "", "role": "admin"}, "username"),
        ({"username": "bob", "role": "root"}, "role"),
        ({"username": "bob smith", "role": "admin"}, "username"),
        ({"username": "bob", "role": "operator", "group_ids": [999999]}, "group_ids"),
        ({"username": "bob\x00", "role": "admin"}, "username"),
    ]
    for body, field in cases:
        error = assert_envelope(await client.post("/api/v1/users", json=body), 422)
        assert field in error["details"]["fields"], body


async def test_the_last_active_admin_can_be_neither_disabled_nor_demoted(
    client: httpx2.AsyncClient,
) -> None:
    admin_id = await user_id(client, "admin")
    for change in ({"state": "disabled"}, {"role": "operator"}):
        response = await client.patch(f"/api/v1/users/{admin_id}", json=change)
        assert_envelope(response, 409, "last_admin")
    await make_user(client, "second", role="admin")
    demoted = await client.patch(f"/api/v1/users/{admin_id}", json={"role": "auditor"})
    assert demoted.status_code == 200
    assert demoted.json()["role"] == "auditor"


async def test_a_role_or_group_change_ends_that_users_sessions(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    group = (await client.post("/api/v1/groups", json={"name": "web"})).json()
    one_time = await make_user(client, "olga")
    await first_login(other, "olga", one_time)
    assert (await other.get("/api/v1/hosts")).status_code == 200
    olga = await user_id(client, "olga")
    changed = await client.patch(f"/api/v1/users/{olga}", json={"group_ids": [group["id"]]})
    assert changed.json()["groups"] == ["web"]
    assert_envelope(await other.get("/api/v1/hosts"), 401, "unauthorized")


async def test_only_admins_manage_users_and_others_sessions(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "opal")
    csrf = await first_login(other, "opal", one_time)
    other.headers["x-csrf-token"] = csrf
    admin_id = await user_id(client, "admin")
    opal = await user_id(client, "opal")
    assert_envelope(await other.get("/api/v1/users"), 403, "forbidden")
    create = await other.post("/api/v1/users", json={"username": "x", "role": "admin"})
    assert_envelope(create, 403, "forbidden")
    patch = await other.patch(f"/api/v1/users/{opal}", json={"role": "admin"})
    assert_envelope(patch, 403, "forbidden")
    assert_envelope(await other.get(f"/api/v1/users/{admin_id}/sessions"), 403, "forbidden")
    own = await other.get(f"/api/v1/users/{opal}/sessions")
    assert own.status_code == 200 and len(own.json()["sessions"]) == 1
    assert (await other.get("/users")).status_code == 403
    # The admin sees opal's session and ends it.
    sessions = (await client.get(f"/api/v1/users/{opal}/sessions")).json()["sessions"]
    session_id = sessions[0]["id"]
    assert sessions[0]["address"] == "10.0.1.1"
    ended = await client.delete(f"/api/v1/users/{opal}/sessions/{session_id}")
    assert ended.status_code == 204
    assert_envelope(await other.get("/api/v1/hosts"), 401, "unauthorized")
    again = await client.delete(f"/api/v1/users/{opal}/sessions/{session_id}")
    assert_envelope(again, 404, "not_found")


async def test_password_change_with_a_wrong_current_password_is_refused(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "pete")
    other.headers["x-csrf-token"] = await first_login(other, "pete", one_time)
    wrong = await other.post(
        "/api/v1/profile/password",
        json={"current_password": "not it", "new_password": "another long phrase of words"},
    )
    error = assert_envelope(wrong, 422, "validation_error")
    assert error["details"]["fields"] == {"current_password": "the current password is wrong"}
    short = await other.post(
        "/api/v1/profile/password", json={"current_password": STRONG, "new_password": "short"}
    )
    assert "new_password" in assert_envelope(short, 422)["details"]["fields"]
    done = await other.post(
        "/api/v1/profile/password",
        json={"current_password": STRONG, "new_password": "another long phrase of words"},
    )
    assert done.status_code == 204
    assert (await other.get("/api/v1/hosts")).status_code == 200  # rotated cookie kept


async def test_reset_password_gives_a_one_time_password_and_ends_sessions(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "rita")
    await first_login(other, "rita", one_time)
    rita = await user_id(client, "rita")
    reset = await client.post(f"/api/v1/users/{rita}/reset-password")
    assert reset.status_code == 200
    assert_envelope(await other.get("/api/v1/hosts"), 401, "unauthorized")
    assert (await client.get(f"/api/v1/users/{rita}")).json()["must_change_password"] is True
    other.cookies.clear()
    await first_login(other, "rita", reset.json()["password"])


async def test_users_page_creates_a_user_and_shows_the_one_time_password_once(
    client: httpx2.AsyncClient,
) -> None:
    page = await client.get("/users")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    created = await client.post(
        "/users", data={"csrf_token": csrf[1], "username": "Pat", "role": "auditor"}
    )
    assert created.status_code == 201
    assert re.search(r'id="one-time-password">[^<]{20}<', created.text)
    duplicate = await client.post(
        "/users", data={"csrf_token": csrf[1], "username": "pat", "role": "auditor"}
    )
    assert duplicate.status_code == 409
    assert "exists" in duplicate.text
    again = await client.get("/users")
    assert "one-time-password" not in again.text
    pat = await user_id(client, "pat")
    disabled = await client.post(f"/users/{pat}", data={"csrf_token": csrf[1], "state": "disabled"})
    assert disabled.status_code == 303
    assert (await client.get(f"/api/v1/users/{pat}")).json()["state"] == "disabled"


async def test_profile_page_lists_own_sessions(client: httpx2.AsyncClient) -> None:
    page = await client.get("/profile")
    assert page.status_code == 200
    assert "this session" in page.text
    assert 'href="/users"' in page.text  # an admin's navigation


async def test_pruning_deletes_expired_sessions_and_login_tokens(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    def expire(conn: Any) -> int:
        conn.execute("UPDATE sessions SET expires_at = now() - interval '1 s'")
        conn.execute("UPDATE login_tokens SET expires_at = now() - interval '1 s'")
        return prune_sessions(conn)

    assert await web_rig.db.run(expire) >= 1
    assert_envelope(await client.get("/api/v1/hosts"), 401, "unauthorized")


async def test_users_page_actions_unlock_reset_and_end_sessions(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "vera")
    await first_login(other, "vera", one_time)
    vera = await user_id(client, "vera")
    csrf = {"csrf_token": client.headers["x-csrf-token"]}
    listed = await client.get(f"/users?sessions={vera}")
    session_id = re.search(rf'action="/users/{vera}/sessions/(\d+)/revoke"', listed.text)
    assert session_id is not None
    ended = await client.post(f"/users/{vera}/sessions/{session_id[1]}/revoke", data=csrf)
    assert ended.status_code == 303
    assert_envelope(await other.get("/api/v1/hosts"), 401, "unauthorized")
    gone = await client.post(f"/users/{vera}/sessions/{session_id[1]}/revoke", data=csrf)
    assert "That+session+had+ended" in gone.headers["location"]
    assert (await client.post(f"/users/{vera}/unlock", data=csrf)).status_code == 303
    assert (await client.post(f"/users/{vera}/revoke-sessions", data=csrf)).status_code == 303
    reset = await client.post(f"/users/{vera}/reset-password", data=csrf)
    assert reset.status_code == 200
    assert re.search(r'id="one-time-password">[^<]{20}<', reset.text)
    bad_role = await client.post(f"/users/{vera}", data=csrf | {"role": "root"})
    assert bad_role.status_code == 422
    missing = await client.post("/users/987654321/unlock", data=csrf)
    assert "no+longer+exists" in missing.headers["location"]
    beyond = await client.post(f"/users/{2**64}/unlock", data=csrf)
    assert beyond.status_code in (404, 422)  # an error page, as for any id beyond bigint


async def test_profile_password_form_shows_errors_and_ends_a_session(
    client: httpx2.AsyncClient, other: httpx2.AsyncClient
) -> None:
    one_time = await make_user(client, "walt")
    csrf = await first_login(other, "walt", one_time)
    wrong = await other.post(
        "/password",
        data={"csrf_token": csrf, "from": "profile", "current_password": "x", "new_password": "y"},
    )
    assert wrong.status_code == 422
    assert "Active sessions" in wrong.text  # the profile page again, with the message
    assert "the current password is wrong" in wrong.text
    # A second browser of walt's, ended from the first one's profile page.
    admin_id = await user_id(client, "walt")
    sessions = (await client.get(f"/api/v1/users/{admin_id}/sessions")).json()["sessions"]
    assert len(sessions) == 1
    own = await other.get("/profile")
    assert "this session" in own.text
    ended = await other.post(
        f"/profile/sessions/{sessions[0]['id']}/revoke", data={"csrf_token": csrf}
    )
    assert ended.status_code == 303
    assert ended.headers["location"].startswith("/profile")


async def test_ending_a_users_sessions_closes_their_relay_socket(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    base_url, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base_url, web_rig, pki)
    admin = await user_id(client, "admin")
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
            ],
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            ended = await client.delete(f"/api/v1/users/{admin}/sessions")
            assert ended.json()["revoked"] >= 2
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 4401
    stop.set()
