"""``write_patch_changes`` (the one patch-poll write: package upserts in one statement over a
JSON object) stores exactly the expected rows for every kind of change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from storage import PatchRow, insert_host, write_patch_changes

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=30)


def _stored(conn: psycopg.Connection[Any], host_id: int) -> tuple[list[Any], dict[str, str]]:
    patches = conn.execute(
        "SELECT name, current_version, available_version, severity, cve_ids, requires_reboot,"
        " first_seen_at, last_seen_at, resolved_at FROM host_patches WHERE host_id = %s"
        " ORDER BY name, first_seen_at",
        (host_id,),
    ).fetchall()
    packages = conn.execute(
        "SELECT name, version FROM host_packages WHERE host_id = %s", (host_id,)
    ).fetchall()
    return patches, dict(packages)


def test_write_patch_changes_stores_the_expected_rows_for_every_kind_of_change(
    db_conninfo: str,
) -> None:
    odd = [("openssl", "3.0.1"), ("weird+name_1.2", "1:2.3~rc1+dfsg-4")]
    odd += [('quo"te\\back', "é-ü 1"), ("{json}", '["x"]')]
    many = [(f"pkg{i:04d}", f"1.{i}-1") for i in range(1500)]
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        host_id = insert_host(conn, name="a", address="127.0.0.1").id
        written = write_patch_changes(
            conn,
            host_id,
            now=T0,
            upserts=[
                PatchRow(
                    "openssl", "3.0.1", "3.0.2", "critical", ("CVE-2026-1", "CVE-2026-2"), True
                ),
                PatchRow("curl", "8.0", "8.1", "medium", (), False),
            ],
            package_upserts=many + odd,
        )
        written += write_patch_changes(
            conn,
            host_id,
            now=T1,
            upserts=[PatchRow("openssl", "3.0.1", "3.0.3", "high", ("CVE-2026-3",), False)],
            resolved=["curl"],
            package_upserts={"pkg0001": "2.0-1", "new-one": "0.1"},  # a mapping works too
            package_deletes=["pkg0002", "pkg0003"],
        )
        patches, packages = _stored(conn, host_id)
    assert written == 2 + 1504 + 1 + 1 + 2 + 2
    assert patches == [
        ("curl", "8.0", "8.1", "medium", [], False, T0, T1, T1),
        ("openssl", "3.0.1", "3.0.3", "high", ["CVE-2026-3"], False, T0, T1, None),
    ]
    expected = dict(many + odd) | {"pkg0001": "2.0-1", "new-one": "0.1"}
    del expected["pkg0002"], expected["pkg0003"]
    assert packages == expected
