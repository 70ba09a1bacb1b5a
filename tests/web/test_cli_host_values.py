"""``hosts list --json`` (the command line, which has no live actor data) never claims a
host healthy that the server sees failing: it says its condition is unknown, why (no live
data, the stored health and when it was last seen) and where the server's view is; and it
gives the stored values it can know, the last health change and the policy's retry count."""

from __future__ import annotations

from typing import Any

import httpx2
import trio

from patch_manager.hosts_cli import NO_LIVE_DATA, all_hosts, hosts_json
from settings import ConfigStore
from simulator.fleet import Fleet
from storage import last_health_change

from .conftest import WebRig
from .test_freshness_review import healthy_host


async def test_cli_host_list_never_says_healthy_for_a_failing_host_and_gives_stored_values(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any, tmp_path: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    host_id = await healthy_host(web_rig, client, fleet)
    fleet.apply_faults(fleet.agents[0].address, {"down": True})
    assert (await client.post("/api/v1/hosts/refresh", json={"host_ids": [host_id]})).is_success
    with trio.fail_after(30):
        await web_rig.system.fleet.wait_until(
            lambda snaps: any(s.condition == "failing" for s in snaps)
        )
    await web_rig.system.sink.flush()
    api = (await client.get("/api/v1/hosts")).json()["hosts"][0]
    assert api["condition"] == "failing" and api["retries_total"] == 3

    config = ConfigStore(tmp_path).current  # the rig's configuration: backoff_s = [1, 1, 1]
    (cli,) = hosts_json(await all_hosts(web_rig.db, stale_s=7200, config=config))
    assert cli["id"] == host_id
    assert cli["condition"] != "healthy"
    assert cli["condition"] == "unknown"
    assert cli["why"].startswith(NO_LIVE_DATA) and "stored health healthy" in cli["why"]
    assert cli["health"] == "healthy"  # the stored health of the last poll, as the API's
    assert cli["retries_total"] == api["retries_total"] == 3
    stored = await web_rig.db.run(last_health_change, host_id)
    assert stored is not None
    assert cli["health_since"] == api["health_since"]
