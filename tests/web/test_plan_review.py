"""Review findings on the deployment plan, its forms, rollback and windows (issue 16, review
F16b), plus the keep-alive hang after an early answer to a large body."""

from __future__ import annotations

from functools import partial

import httpx2
import pytest
import trio

from web import WebListener, serve_web

from ..conftest import Pki
from .conftest import WebRig, login
from .test_relay import browser_context

pytestmark = pytest.mark.timeout(120)


async def test_a_keep_alive_connection_answers_again_after_a_large_body_was_refused_unread(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    stop = trio.Event()
    listener = WebListener("127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path)
    urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    async with httpx2.AsyncClient(
        verify=browser_context(pki),
        base_url=urls[0],
        limits=httpx2.Limits(max_connections=1),
        timeout=10,
    ) as http:
        csrf = await login(http, web_rig.password)
        body = b'{"packages":["' + b"0" * 600_000 + b'"]}'
        early = [
            ({"authorization": "Bearer junk", "content-type": "application/json"}, 401),
            ({"x-csrf-token": csrf, "content-type": "text/plain"}, 415),
        ]
        for headers, status in early:
            refused = await http.post("/api/v1/jobs/plan", content=body, headers=headers)
            assert refused.status_code == status, refused.text
            assert refused.headers.get("connection") == "close"
            with trio.fail_after(8):
                again = await http.get("/api/v1/hosts")
            assert again.status_code == 200
    stop.set()
