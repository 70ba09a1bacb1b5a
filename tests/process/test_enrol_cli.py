"""`patch-manager enroll list|approve|deny` (the command's logic on a real database)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from patch_manager.cli import build_parser
from patch_manager.enrol_cli import enroll_command
from patch_manager.hosts_cli import CommandError
from settings import ConfigStore
from storage import Database, create_enrolment, get_enrolment, list_hosts

from ..conftest import fleet_addresses


async def _request(db: Database, machine: str, address: str, token: str = "") -> int:
    """os_details as the real agent sends them (identity.rs: distro = os-release NAME)."""
    return await db.run(
        lambda c: create_enrolment(
            c, token_sha256=token or f"t-{machine}", machine_id=machine,
            fqdn=f"{machine}.example.com", ip_address=address, hostname=machine,
            os_details={"distro": "Debian GNU/Linux", "version": "12", "id_like": "",
                        "codename": "bookworm", "kernel": "6.1.0"}, source_address="127.0.0.1",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )
    )  # fmt: skip


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["enroll", *argv])


async def test_enroll_list_approve_and_deny(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "patch-manager.toml").write_text('[agents]\nallow_addresses = ["127.0.0.0/8"]\n')
    config = ConfigStore(tmp_path).current
    address = fleet_addresses(1)
    first = await _request(db, "web1", address)
    second = await _request(db, "web2", "127.0.0.77")
    await enroll_command(_args("list"), config, db)
    out = capsys.readouterr().out
    assert "web1.example.com" in out and "Debian GNU/Linux 12" in out and "2 request(s)" in out
    assert "MACHINE" in out and " web2 " in out
    await enroll_command(_args("approve", str(first), "--group", "enrolled"), config, db)
    assert f"approved request {first}" in capsys.readouterr().out
    row = await db.run(get_enrolment, first)
    assert row.status == "approved" and row.decided_by == "cli" and row.host_id is not None
    hosts = await db.run(list_hosts)
    assert any(h.name == address and h.display_name == "web1.example.com" for h in hosts)
    await enroll_command(_args("deny", str(second)), config, db)
    assert (await db.run(get_enrolment, second)).status == "denied"
    with pytest.raises(CommandError, match="denied, not pending"):
        await enroll_command(_args("approve", str(second)), config, db)
    with pytest.raises(CommandError, match="no enrolment request 999"):
        await enroll_command(_args("deny", "999"), config, db)


async def test_enroll_approve_of_a_registered_machines_renewal_keeps_its_host(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "patch-manager.toml").write_text('[agents]\nallow_addresses = ["127.0.0.0/8"]\n')
    config = ConfigStore(tmp_path).current
    address = fleet_addresses(1)
    first = await _request(db, "renew1", address)
    await enroll_command(_args("approve", str(first)), config, db)
    host_id = (await db.run(get_enrolment, first)).host_id
    again = await _request(db, "renew1", address, token="t-renew1-again")
    await enroll_command(_args("approve", str(again)), config, db)
    assert f"approved request {again}: host {host_id} " in capsys.readouterr().out
    assert (await db.run(get_enrolment, again)).host_id == host_id
    assert [h.id for h in await db.run(list_hosts)] == [host_id]
