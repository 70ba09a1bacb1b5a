"""`patch-manager serve` as a real process: start, health, embedded PostgreSQL supervision,
graceful shutdown, configuration errors."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import trio

from .conftest import REPO, process_alive
from .sessions import logged_in


async def get_health(server: Any) -> httpx2.Response:
    """Health with the details (a logged-in session)."""
    client = await logged_in(server)
    try:
        return await client.get("api/v1/health")
    finally:
        await client.aclose()


def checkpoint(data_dir: Path) -> None:
    conninfo = f"host={data_dir}/postgres/run user=postgres dbname=patch_manager"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


async def get_anonymous_health(server: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(verify=server.ssl_context(), timeout=10) as client:
        return await client.get(server.url + "api/v1/health")


async def test_serve_starts_answers_health_and_stops_cleanly(start_server: Any) -> None:
    with trio.fail_after(90):
        server = await start_server()
        await server.wait_ready()
        assert server.url.startswith("https://127.0.0.1:")
        response = await get_health(server)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["database"] == "ok"
        assert body["scheduler"] == "ok"
        assert body["embedded_postgres"]["state"] == "ready"
        assert response.headers["x-request-id"]
        anonymous = await get_anonymous_health(server)
        assert anonymous.status_code == 200
        assert anonymous.json() == {"status": "ok"}
        assert "server" not in anonymous.headers
        assert anonymous.headers["strict-transport-security"].startswith("max-age=")
        pg_pid = server.postmaster_pid()
        assert process_alive(pg_pid)

        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0
    assert not process_alive(pg_pid)
    assert not (server.data_dir / "postgres" / "data" / "postmaster.pid").exists()


async def test_killed_postgres_is_restarted_and_health_recovers(start_server: Any) -> None:
    with trio.fail_after(90):
        server = await start_server()
        await server.wait_ready()
        session = await logged_in(server)  # before the outage: logging in needs the database
        assert (await session.get("api/v1/health")).status_code == 200
        # The test cluster runs with synchronous_commit off: make the session row durable.
        await trio.to_thread.run_sync(checkpoint, server.data_dir)
        old_pid = server.postmaster_pid()

        os.kill(old_pid, signal.SIGKILL)
        index = await server.wait_log("exited unexpectedly")
        # The supervisor waits a second before restarting: health says degraded meanwhile,
        # and only that (a session cannot be checked without the database).
        response = await get_anonymous_health(server)
        assert response.status_code == 503
        assert response.json() == {"status": "degraded"}

        await server.wait_log("ready again", index)
        await server.wait_log("database connections renewed", index)
        response = await session.get("api/v1/health")
        await session.aclose()
        assert response.status_code == 200, response.text
        assert response.json()["database"] == "ok"
        assert response.json()["embedded_postgres"]["restarts"] == 1
        assert server.postmaster_pid() != old_pid

        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0


async def test_web_listener_refuses_tls_1_2(start_server: Any) -> None:
    with trio.fail_after(60):
        server = await start_server()
        await server.wait_ready()
        ctx = ssl.create_default_context(cafile=str(server.data_dir / "ca" / "root.crt"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        async with httpx2.AsyncClient(verify=ctx, timeout=10) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.get(server.url + "api/v1/health")
        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0


def test_bad_configuration_is_one_clear_error(tmp_dir) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_dir / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text("[polling]\nhealth_interval_s = 1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patch_manager",
            "serve",
            "--conf-dir",
            str(conf),
            "--data-dir",
            str(tmp_dir / "data"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "polling.health_interval_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_prints_policy_with_sources(tmp_dir) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_dir / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text("[polling]\npatch_interval_s = 900\n")
    (conf / "hosts.toml").write_text('[hosts."web01"]\nhealth_interval_s = 60\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patch_manager",
            "check-config",
            "--conf-dir",
            str(conf),
            "--host",
            "web01",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "health_interval_s = 60  (host)" in result.stdout
    assert "patch_interval_s = 900  (global)" in result.stdout
    assert "backoff_s = [60, 300, 1800]  (default)" in result.stdout


def test_port_in_use_is_one_clear_line_and_no_stray_postgres(tmp_dir) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "patch_manager",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(tmp_dir / "data"),
                "--conf-dir",
                str(tmp_dir / "conf"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=90,
            env={**os.environ, "PATCH_MANAGER_PG_FAST": "1"},
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"patch-manager: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(set server.bind or --bind)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_dir / "data" / "postgres" / "data" / "postmaster.pid").exists()
