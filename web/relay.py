"""The live relay: one WebSocket per browser tab carrying actor state (R-3.4).

On connect the client gets ``{"type": "snapshot", "hosts": [...]}``, then one
``{"type": "change", "host": {...}}`` or ``{"type": "removed", "host_id": N}`` per change.
A client may ask ``{"action": "watch_scan", "scan_id": N}`` to get ``{"type": "scan", ...}``
progress messages; a socket follows one scan at a time (a new ``watch_scan`` replaces the
previous one, so a client cannot pile up followers). A client that cannot keep up is
disconnected (close code 1013) and reconnects for a fresh snapshot; it never slows the actors.
At shutdown ``close_all()`` ends every socket with a close frame (1001, going away), so that
browsers reconnect instead of seeing a dropped connection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from .api import scan_json
from .handle import SystemHandle
from .serialize import to_json

log = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0
GOING_AWAY = 1001


class Relay:
    def __init__(self, handle: SystemHandle, buffer: int = 256) -> None:
        self.handle = handle
        self.buffer = buffer
        self.connected = 0
        self.dropped = 0
        self.followers = 0  # scan followers running, over every socket
        self._closing = trio.Event()
        self._disconnected = trio.Event()

    async def close_all(self, timeout: float = 5.0) -> int:
        """Close every relay WebSocket with a close frame (1001) and refuse new ones; wait at
        most ``timeout`` seconds for them to end. Returns how many were open."""
        count = self.connected
        self._closing.set()
        with trio.move_on_after(timeout):
            while self.connected:
                await self._disconnected.wait()
        return count

    async def _forward_until_closing(self, scope: trio.CancelScope) -> None:
        await self._closing.wait()
        scope.cancel()

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.connected += 1
        try:
            if self._closing.is_set():
                await websocket.close(code=GOING_AWAY, reason="server shutting down")
                return
            with self.handle.subscribe(self.buffer) as changes:
                await websocket.send_text(
                    json.dumps({"type": "snapshot", "hosts": to_json(self.handle.snapshots())})
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._listen, websocket, nursery)
                    with trio.CancelScope() as forwarding:
                        nursery.start_soon(self._forward_until_closing, forwarding)
                        async for change in changes:
                            message = (
                                {"type": "removed", "host_id": change.snapshot.host_id}
                                if change.removed
                                else {"type": "change", "host": to_json(change.snapshot)}
                            )
                            with trio.move_on_after(SEND_TIMEOUT) as scope:
                                await websocket.send_text(json.dumps(message))
                            if scope.cancelled_caught:
                                break
                    if forwarding.cancelled_caught:  # shutting down
                        with trio.move_on_after(SEND_TIMEOUT):
                            await websocket.close(code=GOING_AWAY, reason="server shutting down")
                    else:  # the subscription ended: this client lagged too far behind
                        self.dropped += 1
                        await websocket.close(code=1013, reason="too slow; reconnect")
                    nursery.cancel_scope.cancel()
        except (WebSocketDisconnect, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.connected -= 1
            self._disconnected.set()
            self._disconnected = trio.Event()

    async def _listen(self, websocket: WebSocket, nursery: trio.Nursery) -> None:
        follower = trio.CancelScope()
        job_follower = trio.CancelScope()
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    data = json.loads(text)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("action") == "watch_job":
                    job_id = data.get("job_id")
                    if isinstance(job_id, int) and not isinstance(job_id, bool):
                        job_follower.cancel()  # one job per socket, like scans
                        job_follower = trio.CancelScope()
                        nursery.start_soon(self._follow_job, websocket, job_id, job_follower)
                if isinstance(data, dict) and data.get("action") == "watch_scan":
                    scan_id = data.get("scan_id")
                    if isinstance(scan_id, int) and not isinstance(scan_id, bool):
                        follower.cancel()  # one follower per socket: the new one replaces it
                        follower = trio.CancelScope()
                        nursery.start_soon(self._follow_scan, websocket, scan_id, follower)
        except (WebSocketDisconnect, RuntimeError):
            nursery.cancel_scope.cancel()

    async def _follow_job(self, websocket: WebSocket, job_id: int, scope: trio.CancelScope) -> None:
        """``{"type": "job", "job_id", "status"}`` whenever the job's roll-up changes (the job
        page reloads once instead of polling)."""
        with scope, self.handle.subscribe_jobs() as changes:
            async for change in changes:
                if change.job_id == job_id:
                    message = {"type": "job", "job_id": job_id, "status": change.status}
                    await websocket.send_text(json.dumps(message))

    async def _follow_scan(
        self, websocket: WebSocket, scan_id: int, scope: trio.CancelScope
    ) -> None:
        with scope:
            self.followers += 1
            try:
                while True:
                    scan: Any = await self.handle.discovery(scan_id)
                    if scan is None:
                        return
                    await websocket.send_text(json.dumps({"type": "scan", **scan_json(scan)}))
                    if scan.progress.done:
                        return
                    await self.handle.wait_discovery_change(scan_id)
            finally:
                self.followers -= 1
