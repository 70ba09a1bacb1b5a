"""``patch-manager simulate --enrol URL`` (issue 14): the fleet's simulated agents enrol
themselves with a running manager (loopback only), each serving once approved."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from asgi_lifespan import LifespanManager

from patch_manager.cli import main as cli_main
from patch_manager.simulate import serve_enrolled
from simulator import FleetSpec
from storage import list_enrolments

from ..conftest import Pki, fleet_addresses
from .conftest import WebRig
from .test_relay import serve

pytestmark = pytest.mark.timeout(90)


async def test_serve_enrolled_enrols_every_fleet_address_at_once_and_each_serves_when_approved(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    async with LifespanManager(web_rig.app):
        base, _stop = await serve(nursery, web_rig, pki)
    spec = FleetSpec(count=2, base_address=fleet_addresses(2), time_scale=0.002)
    wanted = spec.address_list()
    web_rig.system.certificates.auto_approval = (tuple(f"{a}/32" for a in wanted), "", "")
    with trio.fail_after(60):
        addresses = await nursery.start(
            partial(serve_enrolled, base, spec, tmp_path / "enrolled", poll_interval_s=0.05)
        )
    assert addresses == wanted
    rows = await web_rig.db.run(list_enrolments)
    assert sorted(r.source_address for r in rows) == sorted(wanted)
    assert all(r.decided_by == "auto-approval" and r.host_id is not None for r in rows)
    for address in wanted:
        assert (tmp_path / "enrolled" / address / "server.key.pem").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "url", ["https://192.0.2.1:8443", "http://127.0.0.1:8443", "https://manager.example.com"]
)
def test_simulate_enrol_refuses_a_manager_url_off_loopback_or_without_https_in_one_line(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--data-dir", str(tmp_path), "--enrol", url, "--count", "1"]
    assert cli_main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loopback only" in err and url in err
