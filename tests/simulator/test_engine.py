"""The simulated agent's job engine, restarts and scenario handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from actors.agent_client import AgentClient, PatchSelection
from actors.agent_errors import AdmissionRefused, AgentRequestError
from actors.agent_records import JobOperation, JobStatus
from simulator import FaultError, Faults, ScenarioError, load_scenario, parse_whitelist
from simulator.control import execute

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


def client(pki: Pki, agent: Any) -> AgentClient:
    return AgentClient("h", agent.address, pki.client_context(), port=agent.port)


async def test_restart_recovers_orphans_as_agent_restarted(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(3, time_scale=1.0)  # the job is still running at the restart
    agent = next(a for a in fleet.agents if a.profile.upgradable)
    name = next(iter(agent.profile.upgradable))
    async with client(pki, agent) as c:
        accepted = await c.apply_patches(PatchSelection.only([name]), allow_reboot=False)
    agent.time_scale = 0.001  # a short downtime
    await agent.restart(reboot=False)
    async with client(pki, agent) as c:
        job = await c.job(accepted.job_id)  # history survives the restart
    assert job.status is JobStatus.FAILED
    assert job.error_code == "AGENT_RESTARTED"


async def test_reboot_reservation_fails_pending_jobs_and_freezes_admission(
    pki: Pki, start_fleet: Any
) -> None:
    fleet = await start_fleet(3, time_scale=1.0)
    agent = next(a for a in fleet.agents if len(a.profile.upgradable) >= 2)
    first, second = sorted(agent.profile.upgradable)[:2]
    async with client(pki, agent) as c:
        running = await c.update(first)
        await trio.testing.wait_all_tasks_blocked()
        pending = await c.update(second)
        reboot = await c.reboot(force=True, acknowledge_package_database_corruption_risk=True)
        assert reboot.operation is JobOperation.REBOOT
        cancelled = await c.job(pending.job_id)
        assert cancelled.status is JobStatus.FAILED
        assert cancelled.error == "Cancelled: reboot reservation in progress"
        assert (await c.job(running.job_id)).status is JobStatus.RUNNING
        with pytest.raises(AdmissionRefused) as info:
            await c.update(second)
        assert info.value.code == "ADMISSION_FROZEN"


async def test_reboot_without_force_is_blocked_by_active_jobs(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2, time_scale=1.0)
    agent = next(a for a in fleet.agents if a.profile.upgradable)
    async with client(pki, agent) as c:
        await c.update(next(iter(agent.profile.upgradable)))
        with pytest.raises(AdmissionRefused) as info:
            await c.reboot()
    assert (info.value.status, info.value.code) == (409, "REBOOT_BLOCKED")


async def test_rollback_job_is_queued_and_never_runs(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2)
    agent = next(a for a in fleet.agents if a.profile.upgradable)
    name = next(iter(agent.profile.upgradable))
    async with client(pki, agent) as c, c.job_events() as events:
        done = await c.update(name)
        while (await events.receive()).status is not JobStatus.COMPLETED:
            pass
        rollback = await c.rollback(done.job_id)
        assert rollback.operation is JobOperation.ROLLBACK
        # A later job runs and completes while the rollback stays pending.
        other = await c.update(name)
        while True:
            event = await events.receive()
            if event.job_id == other.job_id and event.status.terminal:
                break
        assert (await c.job(rollback.job_id)).status is JobStatus.PENDING
        with pytest.raises(AgentRequestError) as info:
            await c.delete_job(rollback.job_id)
        assert info.value.code == "DELETE_NOT_ALLOWED"
        with pytest.raises(AgentRequestError) as info:
            await c.rollback("00000000-0000-4000-8000-000000000000")
        assert (info.value.status, info.value.code) == (400, "ROLLBACK_NOT_ALLOWED")
        await c.delete_job(done.job_id)


async def test_degraded_health_reports_the_reason(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    fleet.agents[0].set_faults({"degraded": "gpg_expired"})
    async with client(pki, fleet.agents[0]) as c:
        health = await c.health()
    assert health.status == "degraded"
    assert health.degraded_reasons == ("GPG key expired",)


def test_faults_are_validated_with_clear_errors() -> None:
    faults = Faults()
    with pytest.raises(FaultError, match="unknown fault 'nope'"):
        faults.update({"nope": 1})
    with pytest.raises(FaultError, match="expects a bool"):
        faults.update({"down": "yes"})
    with pytest.raises(FaultError, match="unknown job failure"):
        faults.update({"job_failures": ["EXPLODED"]})
    faults.update({"slow_reply_s": 2, "job_failures": ["GPG_ERROR"]})
    assert faults.slow_reply_s == 2.0


def test_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[fleet]\ncount = 4\ntime_scale = 0.5\n[faults.all]\nlose_events = 0.1\n"
        '[faults."127.77.0.2"]\ndown = true\n'
    )
    scenario = load_scenario(path)
    assert scenario.spec.count == 4
    assert scenario.fleet_faults == {"lose_events": 0.1}
    assert scenario.agent_faults == {"127.77.0.2": {"down": True}}
    path.write_text('[fleet]\ncount = 4\n[faults."127.77.0.2"]\ndwn = true\n')
    with pytest.raises(ScenarioError, match=r"faults.127.77.0.2: unknown fault .dwn."):
        load_scenario(path)
    path.write_text("[fleet]\ncolor = 'red'\n")
    with pytest.raises(ScenarioError, match=r"fleet\.color"):
        load_scenario(path)


def test_whitelist_in_the_agents_format() -> None:
    assert parse_whitelist('entries:\n  - "127.0.0.0/8"\n  - "# off"\n  - ""\n') == ["127.0.0.0/8"]
    assert parse_whitelist('entries:\n  - "10.0.0.0/33"\n') == ["!malformed"]
    with pytest.raises(ScenarioError, match="entries"):
        parse_whitelist("hosts: []\n")


async def test_control_api(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2)
    first = fleet.agents[0].address
    answer = await execute(fleet, {"action": "faults", "target": first, "set": {"down": True}})
    assert answer == {"ok": True, "agents": 1}
    assert fleet.agents[0].up is False
    status = await execute(fleet, {"action": "status"})
    assert [a["up"] for a in status["agents"]] == [False, True]
    assert [a["packages"] for a in status["agents"]] == [
        len(a.profile.installed) for a in fleet.agents
    ]
    assert {a["distro"] for a in status["agents"]} <= {"ubuntu", "debian", "rocky", "fedora",
                                                      "alpine", "arch"}  # fmt: skip
    bad = await execute(fleet, {"action": "faults", "target": "127.1.2.3", "set": {}})
    assert bad["ok"] is False and "no simulated agent" in bad["error"]
    assert (await execute(fleet, {"action": "explode"}))["ok"] is False
    patched = await execute(
        fleet, {"action": "add_patch", "target": "all", "name": "openssl", "version": "9.9.9-1"}
    )
    assert patched == {"ok": True, "agents": 2}
    assert fleet.agents[1].profile.upgradable["openssl"] == "9.9.9-1"
