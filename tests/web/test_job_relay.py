"""A job page learns its job's roll-up through the live relay (it never reloads in a loop)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio_websocket

from simulator import Fleet
from storage import JobSpec

from .conftest import WebRig
from .test_relay import browser_context, serve, session_cookie

pytestmark = pytest.mark.timeout(60)


async def test_job_roll_up_is_pushed_to_a_watching_page(
    nursery: trio.Nursery, web_rig: WebRig, pki: Any, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    fleet.agents[0].set_faults({"job_answer_delay_s": 1.0})  # the job cannot end before we watch
    row = await web_rig.system.handle.register_host(fleet.agents[0].address)
    base, stop = await serve(nursery, web_rig, pki)
    cookie = await session_cookie(base, web_rig, pki)
    host, port = base.removeprefix("https://").split(":")
    with trio.fail_after(45):
        async with trio_websocket.open_websocket(
            host,
            int(port),
            "/api/v1/live",
            use_ssl=browser_context(pki),
            extra_headers=[
                (b"cookie", f"pm_session={cookie}".encode()),
                (b"origin", base.encode()),
            ],
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "snapshot"
            other = await web_rig.system.handle.create_job(
                JobSpec(kind="reboot", schedule="window"), [row.id]
            )
            job_id = await web_rig.system.handle.create_job(
                JobSpec(kind="patch", schedule="now"), [row.id]
            )
            await ws.send_message(json.dumps({"action": "watch_job", "job_id": job_id}))
            statuses: list[str] = []
            while not statuses or statuses[-1] in ("queued", "running"):
                message = json.loads(await ws.get_message())
                if message["type"] == "job":
                    assert message["job_id"] == job_id != other  # only the watched job
                    statuses.append(message["status"])
    assert statuses[-1] == "succeeded"
    stop.set()
