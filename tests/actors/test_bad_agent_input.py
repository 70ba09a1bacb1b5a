"""Bad agent input is a one-line protocol error, never a crash of the host actor: JSON
nested too deeply for a decoder, and text that is not valid Unicode (a lone surrogate, which
no UTF-8 database text can hold)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx2
import pytest
import trio

from actors.agent_client import (
    AgentClient,
    _fast_packages,
    _fast_versions,
    _raw_data,
    decode_json,
)
from actors.agent_errors import ProtocolError
from simulator import Fleet

from .conftest import Manager, register

pytestmark = pytest.mark.timeout(120)

DEEP = b'{"success": true, "data": {"packages": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
LONE_ESCAPED = b'{"success": true, "data": {"packages": [{"name": "bad\\ud800name"}]}}'
LONE_RAW = b'{"success": true, "data": {"packages": [{"name": "bad\xed\xa0\x80name"}]}}'


def _response(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)


async def _interpret(body: bytes) -> str:
    """The error ``AgentClient`` makes of ``body`` (one line)."""
    client = AgentClient("h", "127.0.0.1", ssl.create_default_context())
    try:
        with pytest.raises(ProtocolError) as err:
            client._interpret(_response(body))
    finally:
        await client.aclose()
    return str(err.value)


def test_deeply_nested_json_is_left_by_the_fast_paths_and_a_value_error_of_decode_json() -> None:
    response = _response(DEEP)
    assert _raw_data(response) is None
    assert _fast_packages(response) is None
    assert _fast_versions(response) is None
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_json(DEEP)


async def test_deeply_nested_json_is_a_one_line_malformed_json_protocol_error() -> None:
    message = await _interpret(DEEP)
    assert "malformed JSON" in message and "nested too deeply" in message
    assert "\n" not in message


@pytest.mark.parametrize("body", [LONE_ESCAPED, LONE_RAW])
async def test_a_lone_surrogate_in_a_name_is_a_one_line_protocol_error_naming_it(
    body: bytes,
) -> None:
    assert _fast_packages(_response(body)) is None  # msgspec refuses it: the full checks
    message = await _interpret(body)
    assert "not valid Unicode" in message and "bad\\ud800name" in message
    assert "\n" not in message
    message.encode()  # the error itself can be stored


async def test_a_package_name_with_a_lone_surrogate_does_not_crash_the_actor_which_keeps_polling(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.01)
    [agent] = fleet.agents
    agent.profile.installed["bad\ud800name"] = "1.0"
    ids = await register(manager, fleet)
    host_id = ids[agent.address]
    with trio.fail_after(60):
        await manager.fleet.wait_until(
            lambda s: s[0].crashes > 0 or "not valid Unicode" in s[0].last_error
        )
    [snapshot] = manager.fleet.snapshots()
    assert snapshot.crashes == 0 and snapshot.phase.value != "failed"
    assert "\n" not in snapshot.last_error

    del agent.profile.installed["bad\ud800name"]  # fixed on the agent: the next poll stores it
    manager.handle.refresh()
    with trio.fail_after(60):
        await manager.fleet.wait_until(lambda s: s[0].patches_as_of is not None)
    stored = await manager.db.run(
        lambda conn: conn.execute(
            "SELECT count(*) FROM host_packages WHERE host_id = %s", (host_id,)
        ).fetchone()
    )
    assert stored is not None and stored[0] == len(agent.profile.installed)
    [snapshot] = manager.fleet.snapshots()
    assert snapshot.crashes == 0
