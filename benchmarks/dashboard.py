"""Page latency with 2,500 hosts and 30 days of history (R-11.1: dashboard p95 < 300 ms).

    .venv/bin/python benchmarks/dashboard.py --hosts 2500 --days 30

Fills an embedded PostgreSQL with hosts, open and resolved patches, packages and 30 days of
health transitions, then requests the busiest pages through the real application (ASGI, with
a logged-in session) and prints p50/p95/max per page.

Each host's installed packages, pending patches (versions, severities, CVE ids) and operating
system come from the simulator's realistic profile (``simulator.profiles.realistic_profile``,
what ``patch-manager simulate --profile realistic`` serves: 300-2,500 packages, median ~1,200;
0-150 pending); 30 resolved patch episodes per host are taken from its installed packages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import pyotp
import trio

from ca import CertificateAuthority
from patch_manager.adapter import SystemAdapter
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system, reset_password
from settings import ConfigStore
from simulator.catalog import severity_of
from simulator.profiles import realistic_profile
from storage import Database, EmbeddedPostgres, migrate
from web import Auth, create_app

PAGES = ["/", "/hosts", "/hosts?health=degraded&sort=pending&order=desc", "/api/v1/hosts",
         "/api/v1/fleet/summary", "/jobs", "/windows"]  # fmt: skip


RESOLVED_PER_HOST = 30
SEED = 1


def fill(conn: Any, hosts: int, days: int) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO groups (name) SELECT 'group' || g FROM generate_series(1, 20) g")
        cur.execute(
            "INSERT INTO hosts (name, address, display_name, health, os, pending_patches,"
            " security_patches, pending_reboot, last_seen_at, hostname)"
            " SELECT 'host' || i || '.example', ('10.0.0.0'::inet + i), 'host' || i,"
            " (ARRAY['healthy','healthy','healthy','degraded','unreachable'])[1 + i %% 5],"
            " (ARRAY['Ubuntu','Debian GNU/Linux','Rocky Linux'])[1 + i %% 3], 15, 3, i %% 7 = 0,"
            " now() - (i %% 300) * interval '1 second', 'host' || i"
            " FROM generate_series(1, %s) i",
            (hosts,),
        )
        cur.execute("INSERT INTO host_groups SELECT h.id, 1 + h.id % 20 FROM hosts h")
        ids = [r[0] for r in cur.execute("SELECT id FROM hosts ORDER BY id").fetchall()]
        fill_realistic(cur, ids)
        cur.execute(
            "INSERT INTO host_health_history (host_id, at, from_state, to_state, reason)"
            " SELECT h.id, now() - (d || ' days')::interval - (h.id %% 86400) * interval '1 s',"
            " 'healthy', 'degraded', 'GPG key expired' FROM hosts h, generate_series(0, %s) d",
            (days - 1,),
        )
    row = conn.execute(
        "SELECT (SELECT count(*) FROM host_patches) + (SELECT count(*) FROM"
        " host_packages) + (SELECT count(*) FROM host_health_history)"
    ).fetchone()
    return int(row[0])


def fill_realistic(cur: Any, ids: list[int]) -> None:
    """Packages, open and resolved patches and the OS of every host from the realistic
    simulator profile (host ``i`` is simulated agent ``i``)."""
    cur.execute("CREATE TEMP TABLE profile (host_id bigint, os text, os_version text,"
                " hostname text, pending int, security int) ON COMMIT DROP")  # fmt: skip
    profiles = []
    with cur.copy("COPY host_packages (host_id, name, version) FROM STDIN") as copy:
        for index, host_id in enumerate(ids):
            host = realistic_profile(index, SEED)
            profiles.append((host_id, host))
            for name, version in host.installed.items():
                copy.write_row((host_id, name, version))
    patch_columns = ("host_id, name, current_version, available_version, severity, cve_ids,"
                     " first_seen_at, last_seen_at, resolved_at")  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    day, hour = dt.timedelta(days=1), dt.timedelta(hours=1)
    with cur.copy(f"COPY host_patches ({patch_columns}) FROM STDIN") as copy:
        for host_id, host in profiles:
            for n, (name, available) in enumerate(sorted(host.upgradable.items())):
                copy.write_row((host_id, name, host.installed[name], available,
                                severity_of(name), host.cve_ids.get(name, []),
                                now - (n % 30) * day, now, None))  # fmt: skip
            resolved = [n for n in sorted(host.installed) if n not in host.upgradable]
            for n, name in enumerate(resolved[:RESOLVED_PER_HOST]):
                copy.write_row((host_id, name, host.installed[name], host.installed[name] + "+1",
                                severity_of(name), [], now - (n + 1) * day, now - (n + 1) * hour,
                                now - (n + 1) * hour))  # fmt: skip
    with cur.copy("COPY profile FROM STDIN") as copy:
        for host_id, host in profiles:
            security = sum(severity_of(n) in ("critical", "high") for n in host.upgradable)
            copy.write_row((host_id, host.os, host.os_version, host.hostname,
                            len(host.upgradable), security))  # fmt: skip
    cur.execute("UPDATE hosts h SET os = p.os, os_version = p.os_version, hostname = p.hostname,"
                " pending_patches = p.pending, security_patches = p.security"
                " FROM profile p WHERE p.host_id = h.id")  # fmt: skip


async def enrol_second_factor(client: httpx2.AsyncClient) -> None:
    """The fresh admin has no second factor: its session is confined to /mfa/setup until it
    enrols one (an authenticator app here)."""
    page = await client.get("/mfa/setup")
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page.text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert secret is not None and csrf is not None, page.text
    code = pyotp.TOTP(secret[1]).now()
    done = await client.post("/mfa/totp", data={"csrf_token": csrf[1], "code": code})
    assert done.status_code == 200, done.text


async def run(root: Path, hosts: int, days: int, rounds: int) -> None:
    (root / "conf").mkdir()
    cluster = EmbeddedPostgres(root / "pg")
    async with trio.open_nursery() as nursery:
        # logins and second-factor enrolment are audited: the chain needs its key; filling
        # 10,000 hosts takes statements longer than the server's default 30 s limit
        db = Database(
            await nursery.start(cluster.run),
            size=8,
            statement_timeout_s=3600,
            audit_key=secrets.token_bytes(32),
        )
        await db.open()
        await db.run(migrate)
        t0 = time.perf_counter()
        rows = await db.run(fill, hosts, days)
        await db.run(lambda conn: conn.execute("ANALYZE"))
        print(f"filled {hosts} hosts, {rows} history/patch/package rows in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        ca, _ = CertificateAuthority.init(root / "ca")
        storage = Storage(db, cluster, "bench")
        system = build_actor_system(ConfigStore(root / "conf"), storage, ca)
        auth = Auth(db, secure_cookies=False)
        password = await reset_password(db, auth)
        app = create_app(SystemAdapter(storage, system, ca), db, auth=auth)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://bench") as client:
            page = await client.get("/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token is not None
            await client.post("/login", data={"username": "admin", "password": password,
                                              "login_token": token[1]})  # fmt: skip
            await enrol_second_factor(client)
            for path in PAGES:
                times = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                times.sort()
                p95 = times[int(len(times) * 0.95) - 1]
                print(f"{path:<52} p50 {statistics.median(times):6.1f} ms  p95 {p95:6.1f} ms"
                      f"  max {times[-1]:6.1f} ms")  # fmt: skip
        await db.close()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-dash-"))
    root.chmod(0o755)
    try:
        trio.run(run, root, args.hosts, args.days, args.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
