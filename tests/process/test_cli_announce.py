"""The CLI finds a server on the default data directory from its first moment (review F13b
#12): the announcement is written before the server opens its database (initdb, first polls),
and a command that does not attach to an announced server always says which data directory
it uses."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from patch_manager import paths
from patch_manager.cli import _run_server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_server_on_the_default_data_directory_is_announced_before_it_starts(
    home: Path,
) -> None:
    data_dir = home / "demo"
    seen: list[Any] = []

    async def run(ready: Any) -> None:
        # The server's start: nothing is set up yet (no database, no web listener).
        seen.append(paths.running_server())

    _run_server(argparse.Namespace(data_dir=None), data_dir, run)
    assert seen[0] is not None and seen[0].data_dir == data_dir.resolve()
    assert paths.running_server() is None  # withdrawn at the end


def test_a_server_on_an_explicit_data_directory_is_not_announced(
    home: Path, tmp_path: Path
) -> None:
    seen: list[Any] = []

    async def run(ready: Any) -> None:
        seen.append(paths.running_server())

    _run_server(argparse.Namespace(data_dir=tmp_path / "d"), tmp_path / "d", run)
    assert seen == [None]


def test_a_command_on_the_default_database_says_so_when_no_server_is_announced(
    home: Path,
) -> None:
    (home / "postgres").mkdir(parents=True)
    data_dir, note = paths.database_data_dir(None)
    assert data_dir == home
    assert note.startswith(f"using the default data directory {home}: no server announced")
    assert "--data-dir" in note
