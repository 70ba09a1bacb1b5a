"""The web listener's own supervision: when the server itself fails after start-up, it is
logged once and restarted on the same socket, while the rest of the nursery keeps running."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from web.server import ShutdownTrigger, WebListener, _serve_once, restart_delay, serve_web

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class FailingOnce:
    """The real server run, except that the first run fails when told to (as Hypercorn's h2
    protocol used to fail inside the worker)."""

    def __init__(self) -> None:
        self.runs = 0
        self.fail_now = trio.Event()
        self.second_run_serving = trio.Event()

    async def __call__(
        self,
        app: Any,
        config: HypercornConfig,
        sockets: Sockets,
        shutdown_trigger: ShutdownTrigger,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.runs += 1
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(_serve_once, app, config, sockets, shutdown_trigger)
            task_status.started(urls)
            if self.runs == 1:
                await self.fail_now.wait()
                raise RuntimeError("injected server failure")
            self.second_run_serving.set()


def client(pki: Pki) -> httpx2.AsyncClient:
    ctx = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
    return httpx2.AsyncClient(verify=ctx, timeout=10)


async def echo(requests: trio.MemoryReceiveChannel[trio.Event]) -> None:
    """Stands in for the actors: answers as long as it runs."""
    async for reply in requests:
        reply.set()


async def test_a_failed_server_is_logged_once_and_restarted_while_the_nursery_keeps_running(
    nursery: trio.Nursery, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    listener = WebListener(
        "127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path, restart_min_s=0.01
    )
    runner = FailingOnce()
    stop = trio.Event()
    send_ping, receive_ping = trio.open_memory_channel[trio.Event](0)
    nursery.start_soon(echo, receive_ping)
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_web(hello, listener, stop.wait, serve_once=runner, task_status=task_status)
        finally:
            stopped.set()

    with trio.fail_after(30), caplog.at_level(logging.ERROR, logger="web.server"):
        urls = await nursery.start(serve)
        url = urls[0].replace("127.0.0.1", "localhost") + "/"
        async with client(pki) as http:
            assert (await http.get(url)).text == "hello"
            runner.fail_now.set()
            await runner.second_run_serving.wait()
            assert (await http.get(url)).text == "hello"  # same socket, same URL
        pong = trio.Event()
        await send_ping.send(pong)
        await pong.wait()
        failures = [r for r in caplog.records if "web server failed" in r.getMessage()]
        assert len(failures) == 1
        assert failures[0].exc_info is not None
        assert "RuntimeError: injected server failure" in failures[0].getMessage()
        assert runner.runs == 2
        stop.set()
        await stopped.wait()


async def test_shutdown_during_the_restart_delay_ends_at_once(
    nursery: trio.Nursery, pki: Pki
) -> None:
    listener = WebListener(
        "127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path, restart_min_s=600
    )
    runner = FailingOnce()
    stop = trio.Event()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_web(hello, listener, stop.wait, serve_once=runner, task_status=task_status)
        stopped.set()

    with trio.fail_after(10):  # far below the 600 s restart delay
        await nursery.start(serve)
        runner.fail_now.set()
        await trio.testing.wait_all_tasks_blocked()
        stop.set()
        await stopped.wait()
    assert runner.runs == 1


def test_restart_delay_doubles_from_the_minimum_up_to_the_cap() -> None:
    delays = [restart_delay(n, 0.5, 30) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class FailingAtOnce:
    """The real server run, failing right after start-up the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.serving = trio.Event()

    async def __call__(
        self,
        app: Any,
        config: HypercornConfig,
        sockets: Sockets,
        shutdown_trigger: ShutdownTrigger,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.runs += 1
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(_serve_once, app, config, sockets, shutdown_trigger)
            task_status.started(urls)
            if self.runs <= self.failures:
                raise RuntimeError(f"failure {self.runs}")
            self.serving.set()


@pytest.mark.parametrize(
    ("healthy_after_s", "expected"),
    [(3600.0, ["0.01", "0.02", "0.04"]), (0.0, ["0.01", "0.01", "0.01"])],
)
async def test_restart_delay_doubles_for_failures_in_a_row_and_resets_after_a_healthy_run(
    nursery: trio.Nursery,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    healthy_after_s: float,
    expected: list[str],
) -> None:
    listener = WebListener(
        "127.0.0.1:0",
        pki.ca.web_cert_path,
        pki.ca.web_key_path,
        restart_min_s=0.01,
        healthy_after_s=healthy_after_s,
    )
    runner = FailingAtOnce(3)
    stop = trio.Event()
    with trio.fail_after(30), caplog.at_level(logging.ERROR, logger="web.server"):
        urls = await nursery.start(
            partial(serve_web, hello, listener, stop.wait, serve_once=runner)
        )
        await runner.serving.wait()
        async with client(pki) as http:
            assert (await http.get(urls[0].replace("127.0.0.1", "localhost") + "/")).text == "hello"
        stop.set()
    delays = [r.getMessage().split("restarting it in ")[1].split(" s")[0] for r in caplog.records]
    assert delays == expected
