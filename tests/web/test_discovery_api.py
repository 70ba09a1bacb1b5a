"""Host addresses and discovery limits as the JSON API answers them (real database and actors)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest
import trio

from simulator import Fleet

from ..conftest import fleet_addresses
from .conftest import CONF, WebRig, assert_envelope

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def silent_agent(nursery: trio.Nursery) -> AsyncIterator[str]:
    """An address whose agent port accepts TCP and never answers: its scans stay running."""
    address = fleet_addresses(1)
    listeners = await trio.open_tcp_listeners(12443, host=address)

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, silent, listeners)
    yield address


def slow_scans(rig: WebRig) -> None:
    store = rig.system.scheduler.config
    (store.conf_dir / "patch-manager.toml").write_text(CONF + "connect_timeout_s = 30\n")
    assert store.reload()


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"name": "169.254.169.254"}, "name", "link-local"),
        ({"name": "0.0.0.0"}, "name", "unspecified"),
        ({"name": "255.255.255.255"}, "name", "broadcast"),
        ({"name": "::1"}, "name", "IPv6"),
        ({"name": "10.1.2.3", "port": 80}, "port", "not the agent port 12443"),
    ],
)
async def test_a_refused_host_address_is_422_naming_the_field(
    client: httpx2.AsyncClient, body: dict[str, Any], field: str, text: str
) -> None:
    error = assert_envelope(await client.post("/api/v1/hosts", json=body), 422)
    assert text in error["details"]["fields"][field]
    assert (await client.get("/api/v1/hosts")).json()["total"] == 0


async def test_a_duplicate_host_is_409(
    client: httpx2.AsyncClient, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(1)
    body = {"name": fleet.agents[0].address}
    assert (await client.post("/api/v1/hosts", json=body)).status_code == 201
    error = assert_envelope(await client.post("/api/v1/hosts", json=body), 409)
    assert "already registered" in error["details"]["fields"]["name"]


async def test_a_range_of_refused_addresses_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/v1/discovery", json={"cidr": "169.254.169.0/24"})
    error = assert_envelope(response, 422)
    assert "every address of 169.254.169.0/24 is refused" in error["details"]["fields"]["cidr"]


async def test_a_third_concurrent_scan_is_429(
    client: httpx2.AsyncClient, web_rig: WebRig, silent_agent: str
) -> None:
    slow_scans(web_rig)
    body = {"cidr": f"{silent_agent}/32"}
    ids = []
    for _ in range(2):
        response = await client.post("/api/v1/discovery", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["scan_id"])
    error = assert_envelope(await client.post("/api/v1/discovery", json=body), 429)
    assert "discovery.max_concurrent_scans" in error["message"]
    for scan_id in ids:
        response = await client.post(f"/api/v1/discovery/{scan_id}/cancel")
        assert response.json() == {"cancelled": True}


async def test_a_finished_scan_is_still_served_from_the_database(
    client: httpx2.AsyncClient, web_rig: WebRig, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(2)
    prefix = fleet.agents[0].address.rsplit(".", 1)[0]
    response = await client.post("/api/v1/discovery", json={"cidr": f"{prefix}.0/29"})
    assert response.status_code == 202
    scan_id = response.json()["scan_id"]
    handle = web_rig.system.handle
    with trio.fail_after(30):
        while (progress := await handle.wait_discovery_change(scan_id)) is not None:
            if progress.done:
                break
    assert scan_id not in web_rig.system.scheduler.scans
    body = (await client.get(f"/api/v1/discovery/{scan_id}")).json()
    assert body["progress"]["done"] and body["progress"]["found"] == 2
    assert [f["address"] for f in body["found"]] == [a.address for a in fleet.agents]
    assert_envelope(await client.get(f"/api/v1/discovery/{scan_id + 1000}"), 404)
