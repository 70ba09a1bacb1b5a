"""Structured logs (R-9.4): every line a host actor writes carries its host id from the actor's
context variable; the level follows ``logging.level`` on a configuration reload."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from patch_manager import logs
from settings import ConfigStore
from storage import insert_host

from .actors.conftest import Manager, manager  # noqa: F401 (the fixture)
from .conftest import fleet_addresses

pytestmark = pytest.mark.timeout(60)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.addFilter(logs.ContextFilter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


async def test_a_poll_failure_log_line_carries_the_host_id_from_the_actor_context(
    manager: Manager,  # noqa: F811
) -> None:
    handler = Lines()
    logger = logging.getLogger("actors")
    logger.addHandler(handler)
    try:
        address = fleet_addresses(1)  # nothing listens there: the health poll fails
        row = await manager.db.run(lambda c: insert_host(c, name="lonely", address=address))
        await manager.scheduler.reconcile_now()

        def failed_poll_logged(_: object) -> bool:
            return any(str(line["message"]).startswith("poll failed") for line in handler.lines)

        with trio.fail_after(30):
            await manager.fleet.wait_until(failed_poll_logged)
    finally:
        logger.removeHandler(handler)
    line = next(x for x in handler.lines if str(x["message"]).startswith("poll failed"))
    assert (line["host_id"], line["host"]) == (row.id, "lonely")


def test_a_line_outside_any_actor_has_no_host() -> None:
    handler = Lines()
    record = logging.makeLogRecord({"msg": "hello", "levelno": logging.INFO})
    handler.handle(record)
    assert (handler.lines[0]["host_id"], handler.lines[0]["host"]) == (None, None)


def test_set_level_refuses_an_unknown_level(root_level: None) -> None:
    logs.set_level("warning")
    assert logs.current_level() == "warning"
    with pytest.raises(ValueError, match="log level must be one of debug, info, warning, error"):
        logs.set_level("verbose")
    assert logs.current_level() == "warning"


async def test_a_reload_that_changes_logging_level_applies_it(
    tmp_path: Path, root_level: None
) -> None:
    conf = tmp_path / "patch-manager.toml"
    conf.write_text('[logging]\nlevel = "info"\n')
    store = ConfigStore(tmp_path)
    logs.set_level("info")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(logs.follow_config, store)
        await trio.testing.wait_all_tasks_blocked()
        conf.write_text('[logging]\nlevel = "debug"\n')
        assert store.reload()  # what SIGHUP does
        await trio.testing.wait_all_tasks_blocked()
        assert logs.current_level() == "debug"
        logs.set_level("warning")  # set at run time: an unrelated reload keeps it
        conf.write_text('[logging]\nlevel = "debug"\n[server]\ngraceful_timeout_s = 7\n')
        assert store.reload()
        await trio.testing.wait_all_tasks_blocked()
        assert logs.current_level() == "warning"
        nursery.cancel_scope.cancel()
