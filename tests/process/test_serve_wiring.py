"""How serve wires the notifier and retention (review F13b, low): the notifier unseals with the
data directory's sealing key and trusts our CA; retention prunes the audit log with the
database's key; both run supervised: an error is logged and the task restarted after a growing
delay, never ending the server."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.retention import RetentionTask
from ca import Sealer
from patch_manager.runtime import Storage
from patch_manager.serve import _supervised, notifier_for
from settings import load
from storage import AuditEntry, Database
from storage.audit import append, count_entries, latest_checkpoint
from tests.conftest import AUDIT_TEST_KEY

from ..conftest import Pki


async def test_the_notifier_unseals_with_the_data_dirs_key_and_trusts_our_ca(
    db: Database, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PM_SEALING_KEY", raising=False)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "patch-manager.toml").write_text(
        "[auth]\noperators_see_ungrouped = true\n"
    )
    config = load(tmp_path / "conf")
    sender = notifier_for(Storage(db, None, "test"), pki.ca, tmp_path / "data", config)
    sealed = Sealer.for_data_dir(tmp_path / "data").seal("smtp-secret")
    assert sender.sealer is not None and sender.sealer.unseal(sealed) == "smtp-secret"
    assert sender.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert sender.ssl_context.check_hostname
    root = pki.ca.root_cert_path.read_text()
    ours = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(root))
    trusted = [ssl.DER_cert_to_PEM_cert(c) for c in sender.ssl_context.get_ca_certs(True)]
    assert ours in trusted
    assert sender.see_ungrouped is True


async def test_retention_for_the_database_prunes_the_audit_log_with_its_key(
    db: Database,
) -> None:
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)

    def entries(conn: Any) -> None:
        for days in (200, 190, 10):
            append(
                conn, AUDIT_TEST_KEY, AuditEntry("system", "t"), at=now - dt.timedelta(days=days)
            )

    await db.run(entries)
    task = RetentionTask.for_database(db, lambda: 30, lambda: 180, clock=lambda: now)
    summary = await task.run_once()
    assert summary.deleted["audit_entries"] == 2
    checkpoint = await db.run(latest_checkpoint)
    assert checkpoint is not None and checkpoint.last_id == 2
    assert await db.run(count_entries) == 2  # the newest entry and the run's own


async def test_a_supervised_task_that_fails_is_logged_and_restarted_with_a_growing_delay(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []
    t0 = trio.current_time()

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time() - t0)
        if len(starts) == 1:
            raise RuntimeError("broken before it started")
        task_status.started()
        if len(starts) < 4:
            raise RuntimeError("broken while running")
        await trio.sleep_forever()

    with caplog.at_level(logging.ERROR, logger="patch_manager.serve"):
        async with trio.open_nursery() as nursery:
            await nursery.start(_supervised, "flaky", flaky)
            await trio.sleep(600)
            nursery.cancel_scope.cancel()
    assert starts == [0.0, 1.0, 6.0, 36.0]  # after 1, 5 and 30 s
    failed = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert len(failed) == 3 and all(r.exc_info for r in failed)
