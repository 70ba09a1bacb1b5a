"""Keys outside the database: created 0600 once, taken from the environment when set."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from ca import KeyFileError, Sealer, SealError, audit_key, load_or_create_key


def test_key_file_is_created_0600_and_read_back_unchanged(tmp_path: Path) -> None:
    first = audit_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600
    assert audit_key(tmp_path) == first
    assert len(first) == 32


def test_key_from_environment_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PM_AUDIT_KEY", base64.b64encode(b"k" * 32).decode())
    assert audit_key(tmp_path) == b"k" * 32
    assert not (tmp_path / "audit.key").exists()


def test_short_key_in_environment_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PM_X", base64.b64encode(b"short").decode())
    with pytest.raises(KeyFileError, match="PM_X must decode to 32 bytes, not 5"):
        load_or_create_key(tmp_path / "x.key", "PM_X")


def test_sealed_secret_opens_with_same_key_only(tmp_path: Path) -> None:
    sealer = Sealer.for_data_dir(tmp_path)
    sealed = sealer.seal("hunter2hunter2")
    assert "hunter2" not in sealed
    assert Sealer.for_data_dir(tmp_path).unseal(sealed) == "hunter2hunter2"
    with pytest.raises(SealError):
        Sealer(b"z" * 32).unseal(sealed)
