"""Contract tests: our agent client against the simulated agent over real mTLS on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.agent_client import AgentClient, PatchSelection
from actors.agent_errors import (
    AdmissionRefused,
    AgentRequestError,
    AgentTimeout,
    NotWhitelisted,
    ProtocolError,
    RateLimited,
    TLSRejected,
    TransportError,
    Unreachable,
)
from actors.agent_records import JobOperation, JobStatus, PackageStatus
from simulator import Fleet, SimAgent

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)


def client_for(pki: Pki, agent: SimAgent, **kwargs: Any) -> AgentClient:
    return AgentClient(
        agent.profile.hostname, agent.address, pki.client_context(), port=agent.port, **kwargs
    )


def with_patches(fleet: Fleet, minimum: int = 2) -> SimAgent:
    return next(a for a in fleet.agents if len(a.profile.upgradable) >= minimum)


async def test_reads_return_typed_records(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(5)
    agent = with_patches(fleet)
    async with client_for(pki, agent) as client:
        health = await client.health()
        assert health.status == "healthy"
        assert health.version == "2.6.12"
        assert health.uptime_seconds == agent.uptime_seconds
        assert health.crl_status == "valid"
        assert health.degraded_reasons == ()

        info = await client.system_info()
        assert info.hostname == agent.profile.hostname
        assert info.os == agent.profile.os
        assert info.package_db_clean is True

        patches = await client.patches()
        assert {p.name for p in patches.patches} == set(agent.profile.upgradable)
        assert patches.security_updates == sum(
            1 for p in patches.patches if p.severity in ("critical", "high")
        )
        assert all(p.cve_ids == () for p in patches.patches)

        packages = await client.packages()
        assert {p.name for p in packages} == set(agent.profile.installed)
        assert all(p.status is PackageStatus.INSTALLED for p in packages)

        name = next(iter(agent.profile.upgradable))
        one = await client.package(name)
        assert (one.status, one.upgradable) == (PackageStatus.INSTALLED, True)
        assert one.latest_version == agent.profile.upgradable[name]

        service = await client.service("sshd")
        assert service.healthy is True


async def test_patch_apply_runs_with_websocket_events_in_order(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(5)
    agent = with_patches(fleet)
    target = sorted(agent.profile.upgradable)[0]
    others = set(agent.profile.upgradable) - {target}
    new_version = agent.profile.upgradable[target]
    async with client_for(pki, agent) as client, client.job_events() as events:
        accepted = await client.apply_patches(PatchSelection.only([target]), allow_reboot=False)
        assert accepted.operation is JobOperation.PATCH_APPLY
        assert accepted.package_count == 1  # the agent says ["1 packages"]
        seen: list[JobStatus] = []
        while not seen or not seen[-1].terminal:
            event = await events.receive()
            if event.job_id == accepted.job_id:
                seen.append(event.status)
        assert seen == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED]

        job = await client.job(accepted.job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.operation is JobOperation.PATCH_APPLY  # "patchapply" on /jobs
        assert job.progress == 100
        remaining = {p.name for p in (await client.patches()).patches}
        # Exactly the explicit package was applied: the list is sent as such.
        assert remaining == others
        assert (await client.package(target)).version == new_version


def test_explicit_selection_cannot_be_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PatchSelection.only([])
    with pytest.raises(ValueError, match="invalid package name"):
        PatchSelection.only(["openssl; rm -rf /"])
    assert PatchSelection.all().packages is None


async def test_second_mutation_waits_for_the_single_slot(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(5)
    agent = with_patches(fleet, 2)
    first, second = sorted(agent.profile.upgradable)[:2]
    async with client_for(pki, agent) as client, client.job_events() as events:
        a = await client.apply_patches(PatchSelection.only([first]), allow_reboot=False)
        b = await client.update(second)
        order = []
        done: set[str] = set()
        while done != {a.job_id, b.job_id}:
            event = await events.receive()
            order.append((event.job_id, event.status))
            if event.status.terminal:
                done.add(event.job_id)
    b_running = order.index((b.job_id, JobStatus.RUNNING))
    a_completed = order.index((a.job_id, JobStatus.COMPLETED))
    assert a_completed < b_running


async def test_queue_full_is_an_admission_refusal_with_retry_after(
    pki: Pki, start_fleet: Any
) -> None:
    fleet = await start_fleet(3, time_scale=1.0)  # jobs last long enough to fill the queue
    agent = with_patches(fleet, 1)
    agent.set_faults({"queue_depth": 1})
    name = next(iter(agent.profile.upgradable))
    async with client_for(pki, agent) as client:
        await client.update(name)
        with pytest.raises(AdmissionRefused) as info:
            await client.update(name)
    assert info.value.status == 429
    assert info.value.code == "QUEUE_FULL"
    assert info.value.retry_after == 60
    assert info.value.transient


async def test_reboot_makes_the_agent_unreachable_then_back_with_smaller_uptime(
    pki: Pki, start_fleet: Any
) -> None:
    fleet = await start_fleet(2, time_scale=0.01)
    agent = fleet.agents[0]
    async with client_for(pki, agent, connect_timeout=2) as client:
        before = (await client.health()).uptime_seconds
        async with client.job_events() as events:
            accepted = await client.reboot()
            statuses = []
            with pytest.raises(TransportError):  # the stream ends without a close frame
                while True:
                    event = await events.receive()
                    statuses.append(event.status)
        assert statuses == [JobStatus.PENDING, JobStatus.REBOOTING]
        with pytest.raises(Unreachable, match="refused"):
            await client.health()
        # Back after the simulated downtime: wait for the listener, then check.
        await agent.wait_listening()
        after = (await client.health()).uptime_seconds
        assert after < before
        job = await client.job(accepted.job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.operation is JobOperation.REBOOT


async def test_job_failure_carries_the_agents_diagnostics(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(3)
    agent = with_patches(fleet, 1)
    agent.set_faults({"job_failures": ["PKG_NOT_FOUND"]})
    name = next(iter(agent.profile.upgradable))
    async with client_for(pki, agent) as client, client.job_events() as events:
        accepted = await client.apply_patches(PatchSelection.only([name]), allow_reboot=False)
        while True:
            event = await events.receive()
            if event.job_id == accepted.job_id and event.status.terminal:
                break
        assert event.status is JobStatus.FAILED
        assert event.error_code == "PKG_NOT_FOUND"
        job = await client.job(accepted.job_id)
    assert job.error_code == "PKG_NOT_FOUND"
    assert job.exit_code == 100
    assert job.command_stderr is not None and "Unable to locate package" in job.command_stderr
    assert name in agent.profile.upgradable  # nothing changed


async def test_internal_refresh_jobs_are_filtered(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1, time_scale=1.0)
    agent = fleet.agents[0]
    agent.start_internal_refresh("patch_list")
    async with client_for(pki, agent) as client:
        raw = await client._request("GET", "/api/v1/jobs")
        assert any(j["packages"] == ["__patch_list_refresh__"] for j in raw["jobs"])
        assert await client.jobs() == ()


async def test_rate_limit_is_text_429_with_retry_after(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    agent = fleet.agents[0]
    agent.set_faults({"read_per_minute": 1, "read_burst": 1})
    async with client_for(pki, agent) as client:
        await client.patches()
        with pytest.raises(RateLimited) as info:
            await client.patches()
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        # /health and /api/v1/system/info are exempt.
        await client.health()
        await client.system_info()


async def test_whitelist_denial_in_both_modes(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2)
    forbidden, dropped = fleet.agents
    forbidden.set_faults({"whitelist": ["10.0.0.0/8"], "deny_mode": "http403"})
    dropped.set_faults({"whitelist": ["10.0.0.0/8"], "deny_mode": "close"})
    async with client_for(pki, forbidden) as client:
        with pytest.raises(NotWhitelisted):
            await client.health()
    async with client_for(pki, dropped) as client:
        with pytest.raises(TLSRejected, match="not whitelisted"):
            await client.health()


async def test_protocol_errors(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2)
    agent = fleet.agents[0]
    async with client_for(pki, agent) as client:
        with pytest.raises(ProtocolError) as info:
            await client._request("GET", "/api/v1/no/such/endpoint")
        assert info.value.status == 405
        with pytest.raises(ProtocolError) as info:
            await client._request("POST", "/api/v1/patches/apply")  # no body: text/plain 400
        assert info.value.status == 400
        with pytest.raises(ProtocolError, match="400"):
            await client._request(
                "POST", "/api/v1/packages", body={"packages": [], "options": {"force": False}}
            )
        agent.set_faults({"garbage": True})
        with pytest.raises(ProtocolError, match="malformed JSON"):
            await client.patches()


async def test_enveloped_errors(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(2)
    agent = fleet.agents[0]
    async with client_for(pki, agent) as client:
        with pytest.raises(AgentRequestError) as info:
            await client.package("definitely-not-installed")
        assert (info.value.status, info.value.code) == (404, "PKG_NOT_FOUND")
        with pytest.raises(AgentRequestError) as info:
            await client.job("00000000-0000-4000-8000-000000000000")
        assert info.value.code == "JOB_NOT_FOUND"
        with pytest.raises(AgentRequestError) as info:
            await client.update("linux-patch-api")  # nothing newer: 200 with success false
        assert (info.value.status, info.value.code) == (200, "NO_UPDATE_AVAILABLE")
        agent.set_faults({"server_error": True})
        with pytest.raises(AgentRequestError) as info:
            await client.patches()
        assert info.value.code == "PKG_MANAGER_ERROR"
        assert info.value.transient


async def test_unreachable_slow_and_half_open_agents(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(3)
    down, slow, half_open = fleet.agents
    down.set_faults({"down": True})
    slow.set_faults({"slow_reply_s": 5.0})
    half_open.set_faults({"half_open": True})
    async with client_for(pki, down) as client:
        with pytest.raises(Unreachable, match="refused"):
            await client.health()
    async with client_for(pki, slow, request_timeout=0.3) as client:
        with pytest.raises(AgentTimeout):
            await client.health()
    async with client_for(pki, half_open, connect_timeout=0.3) as client:
        with pytest.raises(Unreachable, match="timed out"):
            await client.health()


async def test_duplicate_critical_headers_are_refused(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    agent = fleet.agents[0]
    async with client_for(pki, agent) as client:
        response = await client._client.request(
            "POST",
            "/api/v1/patches/apply",
            content=b"{}",
            headers=[("content-type", "application/json"), ("content-type", "application/json")],
        )
    assert response.status_code == 400
    assert response.text == "Duplicate critical headers not allowed"


async def test_websocket_acknowledges_and_rejects_messages(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    agent = fleet.agents[0]
    async with client_for(pki, agent) as client, client.job_events() as events:
        await events.send_raw(json.dumps({"action": "subscribe"}))
        await events.send_raw("not json")
        # Neither answer is a job event: receive() skips them; a dropped socket ends it.
        agent.drop_websockets()
        with pytest.raises(TransportError):
            await events.receive()


async def wait_terminal(events: Any, job_id: str) -> JobStatus:
    while True:
        event = await events.receive()
        if event.job_id == job_id and event.status.terminal:
            return event.status  # type: ignore[no-any-return]


async def test_install_pinned_version_remove_and_apply_all(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(5)
    agent = with_patches(fleet, 2)
    pinned = sorted(agent.profile.upgradable)[0]
    new_version = agent.profile.upgradable[pinned]
    distro = agent.profile.distro
    vital = distro.family.protected_names if distro else frozenset()
    victim = next(  # a package the tool removes alone: not vital, nothing depends on it
        n
        for n in sorted(agent.profile.installed)
        if n not in agent.profile.upgradable and n not in vital and not agent.profile.dependents(n)
    )
    async with client_for(pki, agent) as client, client.job_events() as events:
        job = await client.install([(pinned, new_version)])
        assert job.operation is JobOperation.INSTALL and job.packages == (pinned,)
        assert await wait_terminal(events, job.job_id) is JobStatus.COMPLETED
        assert (await client.package(pinned)).version == new_version

        job = await client.remove(victim)
        assert await wait_terminal(events, job.job_id) is JobStatus.COMPLETED
        assert victim not in {p.name for p in await client.packages()}

        job = await client.apply_patches(PatchSelection.all(), allow_reboot=False)
        assert job.package_count == 0  # "0 packages" means everything
        assert await wait_terminal(events, job.job_id) is JobStatus.COMPLETED
        assert (await client.patches()).patches == ()
        with pytest.raises(ValueError, match="at least one package"):
            await client.install([])
