"""The demo's simulated hosts show believable package lists on their host pages (issue 18):
registered the way ``patch-manager demo`` does, polled over mTLS, rendered by the web app."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx2
import pytest
import trio

from patch_manager.serve import register_demo_fleet
from simulator import Fleet
from simulator.families import BY_ID, SELF

from ..web.conftest import WebRig, anonymous, client, web_rig

__all__ = ["anonymous", "client", "web_rig"]  # fixtures used by this module

pytestmark = pytest.mark.timeout(90)


async def test_demo_host_pages_list_the_distributions_packages(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(4)
    await register_demo_fleet(web_rig.db, fleet)
    await web_rig.system.scheduler.reconcile_now()
    with trio.fail_after(60):
        await web_rig.system.fleet.wait_until(
            lambda snaps: len(snaps) == 4 and all(s.health.value == "healthy" for s in snaps)
        )
    await web_rig.system.sink.flush()
    hosts = (await client.get("/api/v1/hosts?sort=name")).json()["hosts"]
    by_address = {h["name"]: h["id"] for h in hosts}
    for agent in fleet.agents:
        p = agent.profile
        distro = BY_ID[p.distro_id]
        page = await client.get(f"/hosts/{by_address[agent.address]}")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert f"Installed packages ({len(p.installed)})" in text
        assert p.os in text and p.kernel in text
        for name in (distro.family.tool, SELF):
            row = f"<tr><td>{name}</td><td>{p.installed[name]}</td></tr>"
            searched = html.unescape((await client.get(f"/hosts/{by_address[agent.address]}",
                                                       params={"q": name})).text)  # fmt: skip
            assert row in searched, (p.distro_id, name)
        rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", text)
        assert rows and all(p.installed.get(n) == v for n, v in rows if n in p.installed)
