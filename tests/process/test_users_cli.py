"""`patch-manager users …` against a running server: a new operator from the CLI logs in over
HTTPS, must change the password, and sees only the hosts of their groups."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
import trio

from .sessions import enrol_totp, logged_in
from .test_hosts_cli import cli, text

pytestmark = pytest.mark.timeout(120)

CHOSEN = "maple harbor quietly sings nine"


async def test_operator_created_from_the_cli_changes_password_and_sees_only_their_groups(
    start_server: Any,
) -> None:
    with trio.fail_after(100):
        server = await start_server()
        await server.wait_ready()
        admin = await logged_in(server)
        try:
            page = await admin.get("")
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert csrf is not None
            admin.headers["x-csrf-token"] = csrf[1]
            for name, groups in (("127.216.0.1", ["web"]), ("127.216.0.2", ["db"])):
                added = await admin.post("api/v1/hosts", json={"name": name, "groups": groups})
                assert added.status_code == 201, added.text
        finally:
            await admin.aclose()

        created = await cli(server, "users", "add", "Oli", "--role", "operator", "--group", "web")
        assert created.returncode == 0, created.stderr
        one_time = re.search(r"one-time password: (\S+)", text(created))
        assert one_time is not None
        again = await cli(server, "users", "add", "oli", "--role", "auditor")
        assert again.returncode == 1
        assert again.stderr.decode().strip() == "patch-manager: user 'oli' exists"
        missing = await cli(server, "users", "set-groups", "oli", "nosuch")
        assert "no group 'nosuch'" in missing.stderr.decode()

        async with httpx2.AsyncClient(
            base_url=server.url, verify=server.ssl_context(), timeout=10
        ) as oli:
            form = await oli.get("login")
            token = re.search(r'name="login_token" value="([^"]+)"', form.text)
            assert token is not None
            response = await oli.post(
                "login",
                data={"username": "oli", "password": one_time[1], "login_token": token[1]},
            )
            assert response.headers["location"] == "/password"
            assert (await oli.get("api/v1/hosts")).status_code == 403
            page = await oli.get("password")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            changed = await oli.post(
                "password",
                data={
                    "csrf_token": csrf[1],
                    "current_password": one_time[1],
                    "new_password": CHOSEN,
                },
            )
            assert changed.status_code == 303, changed.text
            assert (await oli.get("api/v1/hosts")).status_code == 403  # no second factor yet
            await enrol_totp(oli)
            hosts = (await oli.get("api/v1/hosts")).json()["hosts"]
            assert [h["name"] for h in hosts] == ["127.216.0.1"]

            listed = await cli(server, "users", "list")
            assert re.search(r"oli\s+operator\s+web\s+active", text(listed)), text(listed)
            demoted = await cli(server, "users", "set-role", "oli", "auditor")
            assert "1 session(s) ended" in text(demoted)
            assert (await oli.get("api/v1/hosts")).status_code == 401

            # An admin resets oli's factors from the shell: the next login enrols again.
            reset = await cli(server, "users", "reset-mfa", "oli")
            assert reset.returncode == 0, reset.stderr
            assert "second factors of oli removed" in text(reset)
            form = await oli.get("login")
            token = re.search(r'name="login_token" value="([^"]+)"', form.text)
            assert token is not None
            relogin = await oli.post(
                "login", data={"username": "oli", "password": CHOSEN, "login_token": token[1]}
            )
            assert relogin.headers["location"] == "/"  # no second step: no factor any more
            assert (await oli.get("")).headers["location"] == "/mfa/setup"

        last = await cli(server, "users", "disable", "admin")
        assert last.returncode == 1
        assert "last active admin" in last.stderr.decode()
