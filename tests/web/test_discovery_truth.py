"""Discovery answers tell the truth (issue 9 review): registering only what the scan found,
cancel reporting whether it cancelled (and the scan stored so), Retry-After on a busy 429."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx2
import pytest
import trio

from simulator import Fleet

from .conftest import WebRig, assert_envelope
from .test_discovery_api import silent_agent, slow_scans

pytestmark = pytest.mark.timeout(60)
__all__ = ["silent_agent"]  # the fixture, used by name


async def finished_scan(client: httpx2.AsyncClient, rig: WebRig, cidr: str) -> int:
    response = await client.post("/api/v1/discovery", json={"cidr": cidr})
    assert response.status_code == 202, response.text
    scan_id = int(response.json()["scan_id"])
    with trio.fail_after(30):
        while (progress := await rig.system.handle.wait_discovery_change(scan_id)) is not None:
            if progress.done:
                break
    return scan_id


async def test_registering_an_address_the_scan_did_not_find_is_422_naming_it(
    client: httpx2.AsyncClient, web_rig: WebRig, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(1)
    prefix = fleet.agents[0].address.rsplit(".", 1)[0]
    scan_id = await finished_scan(client, web_rig, f"{prefix}.0/29")
    stranger = f"{prefix}.6"
    response = await client.post(
        f"/api/v1/discovery/{scan_id}/register",
        json={"addresses": [fleet.agents[0].address, stranger]},
    )
    error = assert_envelope(response, 422, "validation_error")
    assert stranger in error["details"]["fields"]["addresses"]
    assert fleet.agents[0].address not in error["details"]["fields"]["addresses"]
    assert (await client.get("/api/v1/hosts")).json()["total"] == 0


async def test_cancelling_a_finished_scan_answers_false(
    client: httpx2.AsyncClient, web_rig: WebRig, start_fleet: Callable[..., Awaitable[Fleet]]
) -> None:
    fleet = await start_fleet(1)
    scan_id = await finished_scan(client, web_rig, f"{fleet.agents[0].address}/32")
    response = await client.post(f"/api/v1/discovery/{scan_id}/cancel")
    assert response.json() == {"cancelled": False}
    progress = (await client.get(f"/api/v1/discovery/{scan_id}")).json()["progress"]
    assert progress["done"] and not progress["cancelled"]


async def test_a_cancelled_scan_is_stored_as_cancelled_and_a_busy_429_says_when_to_retry(
    client: httpx2.AsyncClient, web_rig: WebRig, silent_agent: str
) -> None:
    slow_scans(web_rig)
    ids = []
    for _ in range(2):
        response = await client.post("/api/v1/discovery", json={"cidr": f"{silent_agent}/32"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["scan_id"])
    busy = await client.post("/api/v1/discovery", json={"cidr": f"{silent_agent}/32"})
    assert_envelope(busy, 429)
    assert int(busy.headers["retry-after"]) > 0
    for scan_id in ids:
        response = await client.post(f"/api/v1/discovery/{scan_id}/cancel")
        assert response.json() == {"cancelled": True}
    with trio.fail_after(30):
        for scan_id in ids:
            while (
                progress := await web_rig.system.handle.wait_discovery_change(scan_id)
            ) is not None:
                if progress.done:
                    break
    for scan_id in ids:
        stored = (await client.get(f"/api/v1/discovery/{scan_id}")).json()["progress"]
        assert stored["done"] and stored["cancelled"]
