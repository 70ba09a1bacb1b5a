"""The agent client's JSON decoding (msgspec, with the standard library behind it) and the
package-status fast path give exactly what the plain versions gave."""

from __future__ import annotations

import json
import math
import ssl

import httpx2
import msgspec
import pytest

from actors.agent_client import (
    OFF_LOOP_BYTES,
    AgentClient,
    _fast_packages,
    _fast_versions,
    _off_loop,
    decode_json,
)
from actors.agent_records import (
    _PACKAGE_STATUS_BY_NORM,
    PackageStatus,
    _norm,
    parse_package_status,
    parse_packages,
)

SAME_AS_JSON = [
    b'{"success": true, "data": {"packages": [{"name": "a", "version": "1"}]}}',
    b'{"a": 1, "a": 2}',
    b'{"big": 123456789012345678901234567890}',
    b'{"a": "\\ud800"}',
    b'\xef\xbb\xbf{"a": 1}',
    '{"a": 1}'.encode("utf-16"),
    b'{"a": 1e400, "b": -1.5e-7}',
    b'  {"a": [1, 2.5, null, false, "\\u00e9\\n"]}  ',
]


@pytest.mark.parametrize("body", SAME_AS_JSON)
def test_decode_json_returns_what_json_loads_returns(body: bytes) -> None:
    assert decode_json(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"Infinity", b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"), b"1e400",
     b'"\\ud800"', b'"\\udc00"', b'"\xed\xa0\x80"'],
)  # fmt: skip
def test_msgspec_refuses_what_decode_json_says_json_decodes_instead(body: bytes) -> None:
    with pytest.raises(msgspec.MsgspecError):
        msgspec.json.decode(body)
    assert repr(decode_json(body)) == repr(json.loads(body))


def test_msgspec_decodes_large_integers_itself_to_what_json_gives() -> None:
    body = b"1" + b"0" * 4000
    assert msgspec.json.decode(body) == json.loads(body) == decode_json(body)


def test_decode_json_keeps_nan_as_json_loads_does() -> None:
    assert math.isnan(decode_json(b'{"a": NaN}')["a"])


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1,}', b'{"a": "\xff"}', b"nul"])
def test_decode_json_raises_value_error_where_json_loads_does(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        decode_json(body)


@pytest.mark.parametrize(
    "value",
    ["installed", "Installed", "INSTALLED", "NotInstalled", "Not_Installed", "not-installed",
     " Upgradable ", "available", "weird", "", None, 3, ["installed"]],
)  # fmt: skip
def test_parse_package_status_fast_path_agrees_with_normalising(value: object) -> None:
    expected = _PACKAGE_STATUS_BY_NORM.get(_norm(value), PackageStatus.UNKNOWN)
    assert parse_package_status(value) is expected


def _response(body: bytes, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, headers={"content-type": "application/json"}, content=body)


def _envelope(packages: object) -> bytes:
    data = {"packages": packages, "total": 2}
    envelope = {"success": True, "request_id": "r", "timestamp": "t", "data": data, "error": None}
    return json.dumps(envelope).encode()


def test_fast_package_list_equals_the_parsed_one() -> None:
    packages = [
        {"name": "openssl", "version": "3.0.2-0ubuntu1.18", "status": "Installed",
         "upgradable": False, "latest_version": "3.0.2-0ubuntu1.18", "description": "",
         "dependencies": ["libc6"], "reverse_dependencies": [], "install_date": None,
         "size_installed": None},
        {"name": "curl", "version": None, "status": "NotInstalled", "upgradable": None},
        {"name": "bash", "status": "weird", "upgradable": True, "latest_version": None,
         "description": "GNU shell", "extra": {"nested": [1, 2.5, "x"]}},
        {"name": "bash", "version": "5.2", "status": None},
    ]  # fmt: skip
    body = _envelope(packages)
    fast = _fast_packages(_response(body))
    assert fast is not None
    assert fast == parse_packages(json.loads(body)["data"])


@pytest.mark.parametrize(
    "body",
    [
        _envelope([{"name": 7, "version": "1"}]),  # parse_package would say "7"
        _envelope([{"name": "a", "version": 1}]),
        _envelope([{"name": "a", "upgradable": "yes"}]),
        _envelope([{"name": "a", "latest_version": 2}]),
        _envelope([{"version": "1"}]),  # no name: a protocol error on the full path
        _envelope(["a"]),
        _envelope([{"name": "a\u0000b"}]),  # NULs are stripped on the full path
        b'{"success": false, "data": {"packages": []}}',
        b'{"success": true, "data": {"packages": [{"name": "a", "v": NaN}]}}',
    ],
)
def test_fast_package_list_leaves_unusual_bodies_to_the_full_path(body: bytes) -> None:
    assert _fast_packages(_response(body)) is None


def test_fast_package_list_leaves_errors_to_the_full_path() -> None:
    assert _fast_packages(_response(_envelope([]), status=500)) is None
    text = httpx2.Response(200, headers={"content-type": "text/plain"}, content=_envelope([]))
    assert _fast_packages(text) is None


async def test_fast_package_list_equals_the_full_path_in_a_worker_thread_on_a_large_body() -> None:
    statuses = ["Installed", "installed", "NotInstalled", "Upgradable", "weird", None]
    packages = [
        {"name": f"pkg-{i:04d}", "version": f"1:{i}.0-{i % 7}ubuntu1", "status": statuses[i % 6],
         "upgradable": (None, True, False)[i % 3], "description": f"Päckage {i} «x» \\ \"q\"",
         "latest_version": None if i % 2 else f"1:{i}.1-1", "dependencies": ["libc6"] * (i % 3),
         "size_installed": i * 1024}
        for i in range(400)
    ]  # fmt: skip
    body = _envelope(packages)
    assert len(body) >= OFF_LOOP_BYTES
    response = _response(body)
    client = AgentClient("h", "127.0.0.1", ssl.create_default_context())
    try:
        full = await _off_loop(
            response, lambda: client._parse(parse_packages, client._interpret(response))
        )
    finally:
        await client.aclose()
    fast = _fast_packages(response)
    assert fast is not None and len(fast) == 400
    assert fast == full
    assert _fast_versions(response) == {p.name: p.version for p in full}
