"""`patch-manager tokens …` against a running server: a metrics token created from the CLI lets
a Prometheus-style scraper read /metrics over HTTPS with no session; listed, revoked (the next
scrape is refused), and bad requests are one-line errors."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
import trio

from .test_hosts_cli import cli, text

pytestmark = pytest.mark.timeout(120)


async def test_metrics_token_from_the_cli_scrapes_metrics_until_revoked(start_server: Any) -> None:
    with trio.fail_after(100):
        server = await start_server()
        await server.wait_ready()
        created = await cli(server, "tokens", "create", "admin", "--scope", "metrics",
                            "--name", "prometheus", "--expires-days", "30")  # fmt: skip
        assert created.returncode == 0, created.stderr
        secret = created.stdout.decode().strip()
        assert re.fullmatch(r"pm_[A-Za-z0-9_-]{43}", secret), secret
        assert "shown once" in created.stderr.decode()

        async with httpx2.AsyncClient(
            base_url=server.url, verify=server.ssl_context(), timeout=10
        ) as prometheus:
            scrape = await prometheus.get("metrics", headers={"authorization": f"Bearer {secret}"})
            assert scrape.status_code == 200, scrape.text
            assert "# TYPE patchmgr_polls_total counter" in scrape.text
            assert not prometheus.cookies

            listed = await cli(server, "tokens", "list", "admin")
            assert listed.returncode == 0, listed.stderr
            line = text(listed)
            assert re.search(r"admin\s+prometheus\s+metrics\s+pm_", line), line
            assert "last used" in line and secret not in line
            token_id = line.split()[0]

            revoked = await cli(server, "tokens", "revoke", token_id)
            assert revoked.returncode == 0, revoked.stderr
            assert "revoked token" in text(revoked)
            refused = await prometheus.get("metrics", headers={"authorization": f"Bearer {secret}"})
            assert refused.status_code == 401
            assert refused.json()["error"]["message"] == "the token has been revoked"

        too_long = await cli(server, "tokens", "create", "admin", "--scope", "read",
                             "--expires-days", "400")  # fmt: skip
        assert too_long.returncode == 1
        assert too_long.stderr.decode().strip() == (
            "patch-manager: expires_days: between 1 and 90 days"
        )
        nobody = await cli(server, "tokens", "create", "nobody", "--scope", "read")
        assert nobody.stderr.decode().strip() == "patch-manager: no user 'nobody'"
        unknown = await cli(server, "tokens", "revoke", "999999")
        assert unknown.stderr.decode().strip() == "patch-manager: no token with id 999999"
