"""``write_patch_diff`` (package upserts in one statement) stores exactly what
``write_patch_changes`` (one statement per row) stores, for every kind of change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import PatchRow, insert_host, write_patch_changes
from storage.host_writes import write_patch_diff

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=30)


def _stored(conn: psycopg.Connection[Any], host_id: int) -> tuple[list[Any], list[Any]]:
    patches = conn.execute(
        "SELECT name, current_version, available_version, severity, cve_ids, requires_reboot,"
        " first_seen_at, last_seen_at, resolved_at FROM host_patches WHERE host_id = %s"
        " ORDER BY name, first_seen_at",
        (host_id,),
    ).fetchall()
    packages = conn.execute(
        "SELECT name, version FROM host_packages WHERE host_id = %s ORDER BY name", (host_id,)
    ).fetchall()
    return patches, packages


def test_write_patch_diff_stores_the_same_rows_as_write_patch_changes(db_conninfo: str) -> None:
    first = {
        "upserts": [
            PatchRow("openssl", "3.0.1", "3.0.2", "critical", ("CVE-2026-1", "CVE-2026-2"), True),
            PatchRow("curl", "8.0", "8.1", "medium", (), False),
        ],
        "package_upserts": [(f"pkg{i:04d}", f"1.{i}-1") for i in range(1500)]
        + [("openssl", "3.0.1"), ("weird+name_1.2", "1:2.3~rc1+dfsg-4")]
        + [('quo"te\\back', "é-ü 1"), ("{json}", '["x"]')],
    }
    second = {
        "upserts": [PatchRow("openssl", "3.0.1", "3.0.3", "high", ("CVE-2026-3",), False)],
        "resolved": ["curl"],
        "package_upserts": [("pkg0001", "2.0-1"), ("new-one", "0.1")],
        "package_deletes": ["pkg0002", "pkg0003"],
    }
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        a = insert_host(conn, name="a", address="127.0.0.1").id
        b = insert_host(conn, name="b", address="127.0.0.2").id
        results = []
        for host_id, write in ((a, write_patch_changes), (b, write_patch_diff)):
            written = write(conn, host_id, now=T0, **first)  # type: ignore[arg-type]
            written += write(conn, host_id, now=T1, **second)  # type: ignore[arg-type]
            results.append((written, _stored(conn, host_id)))
    assert results[0] == results[1]
    written, (patches, packages) = results[1]
    assert written == 2 + 1504 + 1 + 1 + 2 + 2
    assert len(packages) == 1504 - 2 + 1
    assert ("pkg0001", "2.0-1") in packages
    assert [p[0] for p in patches if p[8] is None] == ["openssl"]
