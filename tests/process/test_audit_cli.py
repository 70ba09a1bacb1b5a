"""`patch-manager audit …` against a running server's database: command-line changes are
recorded as ``cli:USER@HOST``, a configuration reload as ``system``; `audit verify` exits 0 on
an intact chain and 1 naming the first broken entry after a row is edited through SQL."""

from __future__ import annotations

import json
import signal
from typing import Any

import psycopg
import pytest
import trio

from patch_manager.audit_cli import cli_actor
from storage import EmbeddedPostgres

from .test_hosts_cli import cli, text

pytestmark = pytest.mark.timeout(150)


async def test_cli_changes_are_audited_and_verify_names_an_edited_entry(
    start_server: Any,
) -> None:
    with trio.fail_after(130):
        server = await start_server()
        await server.wait_ready()

        created = await cli(server, "users", "add", "ivy", "--role", "auditor")
        assert created.returncode == 0, created.stderr
        added = await cli(server, "hosts", "add", "127.217.0.1")
        assert added.returncode == 0, added.stderr
        removed = await cli(server, "hosts", "remove", "127.217.0.1")
        assert removed.returncode == 0, removed.stderr
        conf = server.data_dir.parent / "conf" / "patch-manager.toml"
        conf.write_text(conf.read_text() + "\n[polling]\nhealth_interval_s = 45\n")
        server.process.send_signal(signal.SIGHUP)

        async def entries(action: str) -> list[dict[str, Any]]:
            listed = await cli(server, "audit", "list", "--action", action, "--json")
            assert listed.returncode == 0, listed.stderr
            found: list[dict[str, Any]] = json.loads(text(listed))
            return found

        (user,) = await entries("user.create")
        assert (user["actor"], user["target"]) == (cli_actor(), "user:ivy")
        (host,) = await entries("host.add")
        (gone,) = await entries("host.remove")
        assert host["actor"] == gone["actor"] == cli_actor()
        assert host["target"] == gone["target"] and gone["before"]["name"] == "127.217.0.1"
        await server.wait_log("recorded in the audit log")  # by the running server
        (reload,) = await entries("config.reload")
        assert reload["actor"] == "system"
        assert "polling" in reload["after"]["changed"]

        verified = await cli(server, "audit", "verify")
        assert verified.returncode == 0, verified.stderr
        assert text(verified).startswith("audit chain verified: ")

        cluster = EmbeddedPostgres(server.data_dir / "postgres")
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            conn.execute("UPDATE audit_entries SET actor = 'user:mallory' WHERE id = %s",
                         (user["id"],))  # fmt: skip
        broken = await cli(server, "audit", "verify")
        assert broken.returncode == 1
        assert text(broken).strip() == (
            f"audit chain BROKEN at entry {user['id']}: entry {user['id']} does not match its "
            "MAC (edited, inserted or reordered)"
        )
        bad = await cli(server, "audit", "verify", "--since", "yesterday")
        assert bad.returncode == 2
        assert "is not a date" in bad.stderr.decode()


async def test_verify_with_no_key_or_another_key_says_so_and_creates_no_key_file(
    start_server: Any,
) -> None:
    with trio.fail_after(130):
        server = await start_server()
        await server.wait_ready()
        added = await cli(server, "hosts", "add", "127.217.0.2")
        assert added.returncode == 0, added.stderr
        key_file = server.data_dir / "audit.key"
        kept = key_file.read_bytes()
        key_file.unlink()
        missing = await cli(server, "audit", "verify")
        assert missing.returncode != 0
        assert "no audit key" in missing.stderr.decode()
        assert not key_file.exists()
        key_file.write_bytes(bytes(32))
        key_file.chmod(0o600)
        wrong = await cli(server, "audit", "verify")
        assert wrong.returncode == 1
        assert text(wrong).strip().startswith("audit chain BROKEN: wrong key")
        key_file.write_bytes(kept)
        again = await cli(server, "audit", "verify")
        assert again.returncode == 0, again.stderr
