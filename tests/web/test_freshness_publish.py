"""The failing lines' facts are published (issue 16 point 1, review N4): the host API items
(and the CLI's, the same model), the relay's host payload and the host page carry when the
health or patch poll started failing, the retries used of the ladder and the next attempt."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx2

from web.openapi import document
from web.serialize import to_json

from .conftest import WebRig
from .test_freshness_review import healthy_host

FACTS = ("failing_since", "retries_used", "retries_total", "next_attempt", "health_since",
         "patch_failing_since", "patch_retries_used", "patch_next_attempt")  # fmt: skip


async def test_a_failing_patch_poll_is_in_the_api_host_item_the_relay_payload_and_the_page(
    web_rig: WebRig, client: httpx2.AsyncClient, start_fleet: Any
) -> None:
    host_id = await healthy_host(web_rig, client, await start_fleet(1))
    fleet = web_rig.system.fleet
    live = fleet.get(host_id)
    assert live is not None
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    retry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    fleet.publish(dataclasses.replace(
        live, patch_failing_since=since, patch_retries_used=2, patch_next_attempt=retry
    ))  # fmt: skip
    item = next(h for h in (await client.get("/api/v1/hosts")).json()["hosts"]
                if h["id"] == host_id)  # fmt: skip
    assert set(FACTS) <= set(item)
    assert dt.datetime.fromisoformat(item["patch_failing_since"]) == since
    assert item["patch_retries_used"] == 2 and item["retries_total"] == 3
    assert dt.datetime.fromisoformat(item["patch_next_attempt"]) == retry
    assert item["failing_since"] is None and "patch poll failing since" in item["why"]
    relayed = to_json(fleet.get(host_id))  # the relay sends to_json of the snapshot
    assert relayed["patch_failing_since"] and relayed["patch_retries_used"] == 2
    page = (await client.get(f"/hosts/{host_id}")).text
    assert "patch poll failing since" in page and "2 of 3 retries" in page


def test_the_openapi_host_item_documents_the_failing_facts() -> None:
    doc = document("test")
    entry = doc["components"]["schemas"]["HostEntry"]["properties"]
    assert set(FACTS) <= set(entry)
