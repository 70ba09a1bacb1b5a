"""The command line as the API (issue 16 points 4 and 10): `users list --json` and `tokens list
--json` print the API's replies, and the CLI's password and second-factor resets revoke the
user's API tokens and end their sessions as the web's do, audited as cli:USER@HOST. The CLI runs
as a real subprocess on the test's database."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from ..conftest import AUDIT_TEST_KEY
from .conftest import WebRig

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


async def run_cli(conninfo: str, work: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``patch-manager ARGS`` on the test's database (configured by URL, as an operator would
    point it at an external PostgreSQL) with the test's audit key."""
    conf = work / "cli-conf"
    conf.mkdir(exist_ok=True)
    (conf / "patch-manager.toml").write_text(f"[database]\nurl = {json.dumps(conninfo)}\n")
    env = {**os.environ, "PM_AUDIT_KEY": base64.b64encode(AUDIT_TEST_KEY).decode()}
    done = await trio.run_process(
        [sys.executable, "-m", "patch_manager", *args, "--conf-dir", str(conf),
         "--data-dir", str(work / "cli-data")],
        capture_stdout=True, capture_stderr=True, check=False, cwd=str(REPO), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return done


def printed(done: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(done.stdout.decode())


async def test_users_list_json_is_the_apis_users_reply(
    web_rig: WebRig, client: httpx2.AsyncClient, db_conninfo: str, tmp_path: Path
) -> None:
    made = await client.post("/api/v1/users", json={"username": "ops", "role": "operator"})
    assert made.status_code == 201, made.text
    api = (await client.get("/api/v1/users")).json()
    cli = printed(await run_cli(db_conninfo, tmp_path, "users", "list", "--json"))
    assert cli == api and [u["username"] for u in cli["users"]] == ["admin", "ops"]


async def test_tokens_list_json_is_the_apis_tokens_reply(
    web_rig: WebRig, client: httpx2.AsyncClient, db_conninfo: str, tmp_path: Path
) -> None:
    for name in ("ci", "grafana"):
        made = await client.post("/api/v1/tokens", json={"name": name, "scope": "read"})
        assert made.status_code == 201, made.text
    api = (await client.get("/api/v1/tokens", params={"all": "true"})).json()
    cli = printed(await run_cli(db_conninfo, tmp_path, "tokens", "list", "--json"))
    assert cli == api and [t["name"] for t in cli["tokens"]] == ["grafana", "ci"]
    own = (await client.get("/api/v1/tokens")).json()
    mine = printed(await run_cli(db_conninfo, tmp_path, "tokens", "list", "admin", "--json"))
    assert mine == own


@pytest.mark.parametrize(
    ("command", "action"),
    [
        ("users reset-password ops", "user.password.reset"),
        ("users reset-mfa ops", "user.mfa.reset"),
        ("reset-password --user ops", "user.password.reset"),  # the top-level command
    ],
)
async def test_a_cli_reset_revokes_the_users_api_tokens_audited_as_cli(
    web_rig: WebRig,
    client: httpx2.AsyncClient,
    db_conninfo: str,
    tmp_path: Path,
    command: str,
    action: str,
) -> None:
    made = await client.post("/api/v1/users", json={"username": "ops", "role": "operator"})
    assert made.status_code == 201, made.text
    await run_cli(db_conninfo, tmp_path, "tokens", "create", "ops", "--scope", "read")
    before = (await client.get("/api/v1/tokens", params={"all": "true"})).json()["tokens"]
    assert [t["revoked_at"] for t in before if t["username"] == "ops"] == [None]

    done = await run_cli(db_conninfo, tmp_path, *command.split())

    assert "1 API token(s) revoked" in done.stdout.decode(), done.stdout.decode()
    after = (await client.get("/api/v1/tokens", params={"all": "true"})).json()["tokens"]
    assert all(t["revoked_at"] is not None for t in after if t["username"] == "ops")
    log = (await client.get("/api/v1/audit", params={"action": action})).json()["entries"]
    assert len(log) == 1 and log[0]["actor"].startswith("cli:") and "@" in log[0]["actor"]
    assert log[0]["target"] == "user:ops" and log[0]["after"]["tokens_revoked"] == 1
