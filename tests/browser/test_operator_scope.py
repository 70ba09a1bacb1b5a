"""An operator in a real headless Chromium sees only the hosts of their groups: on every page
and in the live events the pages receive.

The server runs in this process (Hypercorn over TLS on loopback, the real actor system, a
simulated fleet) so that the users and groups are set up through storage; Playwright's sync API
drives the browser from a worker thread while trio serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyotp
import pytest
import trio
from playwright.sync_api import Page, WebSocket, expect, sync_playwright

from simulator import Fleet
from storage import JobSpec, create_group, create_user, set_user_groups
from web.handle import SystemHandle

from ..web.conftest import WebRig, web_rig  # noqa: F401  (the in-process application)
from ..web.test_relay import serve
from .login import log_in

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "operator-browser-password-1"
SECRET = pyotp.random_base32()  # operator1's authenticator app
PAGES = ["/", "/hosts", "/jobs", "/windows", "/groups", "/deploy"]


def browse_as_operator(
    base: str, mine: list[dict[str, Any]], theirs: list[dict[str, Any]], poke: Any
) -> list[str]:
    """Log in, visit every page and collect what is wrong (runs in a worker thread)."""
    problems: list[str] = []
    frames: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(20_000)
        page: Page = context.new_page()
        sockets: list[WebSocket] = []

        def opened(ws: WebSocket) -> None:
            sockets.append(ws)
            ws.on("framereceived", lambda f: frames.append(str(f)))

        page.on("websocket", opened)
        log_in(page, base, "operator1", PASSWORD, SECRET)
        for path in [*PAGES, *(f"/hosts/{h['id']}" for h in mine)]:
            response = page.goto(base + path)
            assert response is not None
            if response.status != 200:
                problems.append(f"{path}: {response.status}")
            html = page.content()
            for host in theirs:
                if host["name"] in html or f'href="/hosts/{host["id"]}"' in html:
                    problems.append(f"{path} shows {host['name']}")
            if path == "/hosts":
                for host in mine:
                    if host["name"] not in html:
                        problems.append(f"/hosts misses {host['name']}")
        for host in theirs:
            for path in (f"/hosts/{host['id']}", f"/jobs/{host['job_id']}"):
                response = page.goto(base + path)
                assert response is not None
                if response.status != 404:
                    problems.append(f"{path}: {response.status}, expected 404")
        # Live events: the hosts page is open; every host is polled again now.
        page.goto(base + "/hosts")
        expect(page.locator("#live-status")).to_have_text("live")  # (no eval under the CSP)
        remaining = {h["id"] for h in mine}

        def arrived(payload: str | bytes) -> bool:
            remaining.difference_update(_changed_hosts([str(payload)]))
            return not remaining

        with sockets[-1].expect_event("framereceived", predicate=arrived, timeout=20_000):
            poke()
        browser.close()
    seen = _all_hosts(frames)
    for host in theirs:
        if host["id"] in seen:
            problems.append(f"live events carried host {host['id']} ({host['name']})")
    return problems


def _messages(frames: list[str]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        try:
            message = json.loads(frame)
        except ValueError:
            continue
        if isinstance(message, dict):
            out.append(message)
    return out


def _changed_hosts(frames: list[str]) -> set[int]:
    return {m["host"]["host_id"] for m in _messages(frames) if m.get("type") == "change"}


def _all_hosts(frames: list[str]) -> set[int]:
    ids: set[int] = set()
    for m in _messages(frames):
        if m.get("type") in ("snapshot", "snapshot_page"):  # the snapshot comes in pages
            ids |= {h["host_id"] for h in m["hosts"]}
        elif m.get("type") == "change":
            ids.add(m["host"]["host_id"])
        elif m.get("type") == "removed":
            ids.add(m["host_id"])
    return ids


async def test_operator_sees_only_their_groups_hosts_on_every_page_and_in_live_events(
    nursery: trio.Nursery,
    web_rig: WebRig,  # noqa: F811
    pki: Any,
    start_fleet: Any,
) -> None:
    assert CHROMIUM.exists(), "browser tests need Debian's chromium (apt-get install chromium)"
    fleet: Fleet = await start_fleet(4)
    handle: SystemHandle = web_rig.app.state.relay.handle
    mine_group = await web_rig.db.run(create_group, "mine")
    await web_rig.db.run(create_group, "theirs")
    hosts: dict[str, list[dict[str, Any]]] = {"mine": [], "theirs": []}
    for i, agent in enumerate(fleet.agents):
        side = "mine" if i % 2 == 0 else "theirs"
        row = await handle.register_host(agent.address, groups=[side])
        job_id = await handle.create_job(JobSpec(kind="patch", schedule="window"), [row.id])
        hosts[side].append({"id": row.id, "name": row.name, "job_id": job_id})
    hashed = await web_rig.auth.hash_password(PASSWORD)
    user = await web_rig.db.run(create_user, "operator1", hashed, "operator")
    await web_rig.db.run(set_user_groups, user.id, [mine_group.id])
    await web_rig.auth.mfa.enrol_known_totp(user.id, SECRET)
    base, stop = await serve(nursery, web_rig, pki)
    token = trio.lowlevel.current_trio_token()
    every = [h["id"] for side in hosts.values() for h in side]

    def poke() -> None:
        trio.from_thread.run_sync(handle.refresh, every, trio_token=token)

    with trio.fail_after(150):
        problems = await trio.to_thread.run_sync(
            browse_as_operator, base.rstrip("/"), hosts["mine"], hosts["theirs"], poke
        )
    stop.set()
    assert problems == []
