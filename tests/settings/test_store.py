from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from settings import ConfigStore


def write(conf: Path, main: str) -> None:
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "patch-manager.toml").write_text(main)


async def test_reload_of_a_good_file_reaches_subscribers(tmp_path: Path) -> None:
    write(tmp_path, "[polling]\nhealth_interval_s = 60\n")
    store = ConfigStore(tmp_path)
    seen: list[int] = []

    async def subscriber() -> None:
        _, config = await store.wait_changed(store.version)
        seen.append(config.polling.health_interval_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscriber)
        await trio.testing.wait_all_tasks_blocked()
        write(tmp_path, "[polling]\nhealth_interval_s = 90\n")
        assert store.reload() is True
    assert seen == [90]
    assert store.version == 1


async def test_bad_file_is_rejected_and_old_config_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "[polling]\nhealth_interval_s = 60\n")
    store = ConfigStore(tmp_path)
    write(tmp_path, "[polling]\nhealth_interval_s = -1\nunknown = 2\n")
    with caplog.at_level(logging.ERROR):
        assert store.reload() is False
    assert store.current.polling.health_interval_s == 60
    assert store.version == 0
    assert "polling.health_interval_s" in caplog.text
    assert "polling.unknown" in caplog.text


async def test_unchanged_content_publishes_nothing(tmp_path: Path) -> None:
    write(tmp_path, "")
    store = ConfigStore(tmp_path)
    assert store.reload() is True
    assert store.version == 0


async def test_file_watcher_picks_up_a_change(tmp_path: Path) -> None:
    write(tmp_path, "[polling]\npaused = false\n")
    store = ConfigStore(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.watch_files, 0.01)
            write(tmp_path, "[polling]\npaused = true\n# a longer file\n")
            _, config = await store.wait_changed(0)
            nursery.cancel_scope.cancel()
    assert config.polling.paused is True
