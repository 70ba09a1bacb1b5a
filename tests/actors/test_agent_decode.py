"""The agent client's JSON decoding (msgspec, with the standard library behind it) and the
package-status fast path give exactly what the plain versions gave."""

from __future__ import annotations

import json
import math

import pytest

from actors.agent_client import decode_json
from actors.agent_records import _PACKAGE_STATUS_BY_NORM, PackageStatus, _norm, parse_package_status

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
