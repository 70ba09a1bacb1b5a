"""The simulator's control API: JSON lines on a unix socket, never on an agent's address.

Each request is one JSON object on a line; each answer is one JSON object on a line:

    {"action": "status"}
    {"action": "faults", "target": "all" | "127.77.0.5" | [...], "set": {"down": true}}
    {"action": "reboot" | "restart" | "drop_websockets", "target": ...}
    {"action": "add_patch", "target": ..., "name": "openssl", "version": "3.0.99-1"}
    {"action": "reload_crl"}

Answers: ``{"ok": true, ...}`` or ``{"ok": false, "error": "what was wrong"}``.
"""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .fleet import Fleet, ScenarioError
from .model import FaultError


async def execute(fleet: Fleet, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or not isinstance(request.get("action"), str):
        return {"ok": False, "error": 'a request is a JSON object with an "action"'}
    action = request["action"]
    target = request.get("target", "all")
    try:
        if action == "status":
            return {"ok": True, "agents": fleet.status()}
        if action == "faults":
            values = request.get("set")
            if not isinstance(values, dict):
                return {"ok": False, "error": '"set" must be an object of fault values'}
            return {"ok": True, "agents": fleet.apply_faults(target, values)}
        if action in ("reboot", "restart"):
            agents = fleet.select(target)
            reboot = action == "reboot"
            async with trio.open_nursery() as nursery:
                for agent in agents:
                    nursery.start_soon(partial(agent.restart, reboot=reboot))
            return {"ok": True, "agents": len(agents)}
        if action == "drop_websockets":
            return {"ok": True, "dropped": sum(a.drop_websockets() for a in fleet.select(target))}
        if action == "add_patch":
            name, version = request.get("name"), request.get("version")
            if not isinstance(name, str) or not isinstance(version, str):
                return {"ok": False, "error": '"name" and "version" must be strings'}
            agents = fleet.select(target)
            for agent in agents:
                agent.profile.installed.setdefault(name, "0.0.1-1")
                agent.profile.upgradable[name] = version
            return {"ok": True, "agents": len(agents)}
        if action == "reload_crl":
            await fleet.reload_crl()
            return {"ok": True}
    except (ScenarioError, FaultError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown action {action!r}"}


async def _serve_one(fleet: Fleet, stream: trio.abc.Stream) -> None:
    buffer = b""
    async with stream:
        async for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    request = json.loads(line)
                except ValueError as exc:
                    answer: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
                else:
                    answer = await execute(fleet, request)
                await stream.send_all(json.dumps(answer).encode() + b"\n")


async def serve_control(
    fleet: Fleet, path: Path, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on the unix socket ``path`` (mode 0600) until cancelled."""
    if path.exists():
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started(path)
    try:
        await trio.serve_listeners(partial(_serve_one, fleet), [listener])
    finally:
        path.unlink(missing_ok=True)


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Blocking client: send one request, return the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
