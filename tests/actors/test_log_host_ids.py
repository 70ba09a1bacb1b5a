"""Log lines about one host outside its actor carry its host id too (review F13b, low): the
scheduler's address-policy line (a running host refused after a reload)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

from patch_manager import logs
from patch_manager.runtime import Storage
from patch_manager.serve import build_actor_system
from settings import ConfigStore
from storage import Database, insert_host

from ..conftest import Pki, fleet_addresses
from .conftest import FAST_POLICY

pytestmark = pytest.mark.timeout(60)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.addFilter(logs.ContextFilter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_the_schedulers_address_policy_lines_carry_the_host_id(
    nursery: trio.Nursery, db: Database, pki: Pki, tmp_path: Path
) -> None:
    conf = tmp_path / "patch-manager.toml"
    conf.write_text(FAST_POLICY)
    store = ConfigStore(tmp_path)
    system = build_actor_system(store, Storage(db, None, "test"), pki.ca)
    await nursery.start(system.sink.run)
    await nursery.start(system.scheduler.run)
    handler = Lines()
    logger = logging.getLogger("actors.scheduler")
    logger.addHandler(handler)
    try:
        address = fleet_addresses(1)  # loopback; nothing listens there
        row = await db.run(lambda c: insert_host(c, name="lonely", address=address))
        await system.scheduler.reconcile_now()
        conf.write_text(FAST_POLICY.replace('allow_addresses = ["127.0.0.0/8"]', ""))
        assert store.reload()
        await system.scheduler.reconcile_now()
    finally:
        logger.removeHandler(handler)
    stopping = next(x for x in handler.lines if "stopping its actor" in str(x["message"]))
    assert (stopping["host_id"], stopping["host"]) == (row.id, "lonely")
