"""The web's own database pool (issue 17): ``serve`` opens ``database.web_pool_size``
connections with their own thread limiter for the web, so that a page never waits behind the
actors' ingest writes on the actors' ``database.pool_size`` connections."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio

from patch_manager.adapter import SystemAdapter
from patch_manager.runtime import open_storage
from patch_manager.serve import build_actor_system, build_web
from settings import ConfigStore, load

from ..conftest import Pki


async def test_the_web_pool_answers_while_every_actor_connection_is_busy(
    db_conninfo: str, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(
        f"[database]\nurl = {db_conninfo!r}\npool_size = 2\nweb_pool_size = 3\n"
    )
    config = load(conf)
    release = threading.Event()
    busy = threading.Semaphore(0)

    def ingest_write(conn: Any) -> None:  # an actor's long write, holding its connection
        busy.release()
        release.wait(30)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_storage(nursery, config, tmp_path / "data", web_pool=True) as storage:
                assert storage.web_db is not None and storage.web is storage.web_db
                assert (storage.db.size, storage.web.size) == (2, 3)
                for _ in range(storage.db.size):
                    nursery.start_soon(storage.db.run, ingest_write)
                for _ in range(storage.db.size):
                    await trio.to_thread.run_sync(busy.acquire)
                assert storage.db.limiter.available_tokens == 0
                # Every actor connection and thread is taken: the web still answers at once.
                with trio.fail_after(2):
                    names = await storage.web.run(
                        lambda conn: conn.execute(
                            "SELECT current_setting('application_name')"
                        ).fetchone()
                    )
                assert names == ("patch-manager-web",)
                release.set()
            nursery.cancel_scope.cancel()


async def test_without_a_web_pool_the_web_shares_the_actors_pool(
    db_conninfo: str, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(f"[database]\nurl = {db_conninfo!r}\n")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_storage(nursery, load(conf), tmp_path / "data") as storage:
                assert storage.web_db is None and storage.web is storage.db
                assert storage.pools() == [storage.db]
            nursery.cancel_scope.cancel()


async def test_health_pings_the_actors_pool_and_the_web_pool(
    db_conninfo: str, tmp_path: Path, pki: Pki
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(f"[database]\nurl = {db_conninfo!r}\n")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_storage(
                nursery, load(conf), tmp_path / "data", web_pool=True
            ) as storage:
                system = build_actor_system(ConfigStore(conf), storage, pki.ca)
                report = await SystemAdapter(storage, system, pki.ca).health()
                assert report.database == "ok"
                assert report.details["database_pools"] == {"actors": "ok", "web": "ok"}
                await storage.web.close()  # the web's pool gone: the database is not "ok"
                report = await SystemAdapter(storage, system, pki.ca).health()
                assert report.database == "down"
                assert report.details["database_pools"] == {"actors": "ok", "web": "down"}
            nursery.cancel_scope.cancel()


async def test_health_reports_a_busy_actors_pool_as_busy_not_down_and_answers_at_once(
    db_conninfo: str, tmp_path: Path, pki: Pki
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(
        f"[database]\nurl = {db_conninfo!r}\npool_size = 2\nweb_pool_size = 2\n"
    )
    release = threading.Event()
    busy = threading.Semaphore(0)

    def ingest_write(conn: Any) -> None:  # an actor's long write, holding its connection
        busy.release()
        release.wait(30)

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                async with open_storage(
                    nursery, load(conf), tmp_path / "data", web_pool=True
                ) as storage:
                    system = build_actor_system(ConfigStore(conf), storage, pki.ca)
                    adapter = SystemAdapter(storage, system, pki.ca)
                    for _ in range(storage.db.size):
                        nursery.start_soon(storage.db.run, ingest_write)
                    for _ in range(storage.db.size):
                        await trio.to_thread.run_sync(busy.acquire)
                    # Every actor connection is checked out by ingest: busy, not down, and
                    # health does not wait for one (its p95 budget is 100 ms).
                    with trio.fail_after(1):
                        report = await adapter.health()
                    assert report.database == "ok"
                    assert report.details["database_pools"] == {"actors": "busy", "web": "ok"}
                    await storage.web.close()  # and the web's pool gone too: down
                    with trio.fail_after(5):
                        report = await adapter.health()
                    assert report.database == "down"
                    assert report.details["database_pools"] == {"actors": "busy", "web": "down"}
                    release.set()
                nursery.cancel_scope.cancel()
    finally:
        release.set()


async def test_serve_wiring_gives_auth_the_app_tokens_and_the_handle_the_web_pool(
    db_conninfo: str, tmp_path: Path, pki: Pki
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "patch-manager.toml").write_text(f"[database]\nurl = {db_conninfo!r}\n")
    config = load(conf)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_storage(nursery, config, tmp_path / "data", web_pool=True) as storage:
                system = build_actor_system(ConfigStore(conf), storage, pki.ca)
                auth, app = build_web(config, tmp_path / "data", storage, system, pki.ca)
                web = storage.web_db
                assert web is not None and web is not storage.db
                assert auth.db is web
                assert app.state.tokens.db is web
                assert app.state.relay.db is web  # create_app's database
                # The work the web starts through the handle (register/remove hosts, jobs,
                # discovery, certificates) writes through the web's pool too.
                handle = app.state.relay.handle
                assert isinstance(handle, SystemAdapter)
                assert handle._db is web
            nursery.cancel_scope.cancel()
