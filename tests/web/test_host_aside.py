"""A host's secondary text (issue 16 review rvA point 4): beside a display name, the registered
name and the address are shown only when they say something the display name does not. A demo
host whose name, display name and address are one address shows it once, and the windows list
names the address of a host window's host."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx2
import psycopg
import pytest

from .conftest import WebRig

pytestmark = pytest.mark.timeout(60)

ADDRESS = "127.70.210.5"


async def host_named_by_its_address(web_rig: WebRig, client: httpx2.AsyncClient) -> int:
    """A host as the demo registers them: name, address and display name all the address."""
    created = await client.post("/api/v1/hosts", json={"name": ADDRESS})
    host_id = int(created.json()["id"])

    def name(conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE hosts SET display_name = name WHERE id = %s", (host_id,))

    await web_rig.db.run(name)
    return host_id


async def test_a_host_named_by_its_address_shows_the_address_once_on_the_list_and_its_page(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host_id = await host_named_by_its_address(web_rig, client)
    listing = html.unescape((await client.get("/hosts")).text)
    row = re.search(rf'<a href="/hosts/{host_id}">{ADDRESS}</a>(.*?)</td>', listing, re.S)
    assert row is not None
    assert ADDRESS not in row[1]
    page = html.unescape((await client.get(f"/hosts/{host_id}")).text)
    assert f"{ADDRESS} · {ADDRESS}" not in page
    assert re.search(rf'<p class="muted">{re.escape(ADDRESS)}:\d+', page), page[:2000]


async def test_the_windows_list_names_a_host_window_by_display_name_and_address(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host_id = await host_named_by_its_address(web_rig, client)

    def rename(conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE hosts SET display_name = 'db-primary' WHERE id = %s", (host_id,))

    await web_rig.db.run(rename)
    made = await client.post("/api/v1/windows", json={"host_id": host_id, "weekdays": [0]})
    window_id = made.json()["id"]
    page = html.unescape((await client.get("/windows")).text)
    cell = re.search(rf'<tr id="window-{window_id}"[^>]*><td>(.*?)</td>', page, re.S)
    assert cell is not None
    assert "db-primary" in cell[1] and ADDRESS in cell[1], cell[1]
