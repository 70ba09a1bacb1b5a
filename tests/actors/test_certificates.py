"""The certificate service: agent certificates the manager refuses, CRL re-signing on schedule,
renewal of the manager's client certificate with overlap (real mTLS to simulated agents)."""

from __future__ import annotations

import datetime as dt
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509

from actors.agent_client import AgentClient
from actors.agent_errors import AgentCertificateInvalid, AgentError, TLSRejected
from actors.certificates import CertificateService, CertificateTimings
from ca import (
    AgentPeerPolicy,
    CertificateAuthority,
    CertKind,
    agent_client_context,
    web_server_context,
)
from simulator import Fleet, FleetSpec
from storage import Database, record_certificate, revoke_certificate

from ..conftest import fleet_addresses

pytestmark = pytest.mark.timeout(120)


def _own_ca(tmp_path: Path) -> CertificateAuthority:
    ca, _ = CertificateAuthority.init(tmp_path / "ca")
    return ca


async def _start_fleet(nursery: trio.Nursery, ca: CertificateAuthority, tmp: Path,
                       count: int) -> Fleet:  # fmt: skip
    spec = FleetSpec(count=count, time_scale=0.002, port=0, base_address=fleet_addresses(count))
    fleet = Fleet(ca.directory, tmp / "sim", spec)
    await nursery.start(fleet.run)
    return fleet


def _context(ca: CertificateAuthority, policy: AgentPeerPolicy | None) -> ssl.SSLContext:
    return agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path, policy)


async def _serve_web_certificate(nursery: trio.Nursery, ca: CertificateAuthority) -> int:
    """A TLS listener on 127.0.0.1 presenting the web UI's certificate (answers nothing)."""
    ctx = web_server_context(ca.web_cert_path, ca.web_key_path)

    async def handler(stream: trio.SSLStream[Any]) -> None:
        try:
            await stream.do_handshake()
            await stream.receive_some(65536)
        except trio.BrokenResourceError:
            pass

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handler, 0, ctx, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_the_web_certificate_is_refused_as_an_agent_certificate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = _own_ca(tmp_path)
    port = await _serve_web_certificate(nursery, ca)
    policy = AgentPeerPolicy(not_agent=ca.own_serials())
    async with AgentClient("web", "127.0.0.1", _context(ca, policy), port=port) as client:
        with pytest.raises(AgentCertificateInvalid, match="not issued as an agent certificate"):
            await client.health()
    assert policy.refused_handshakes == 1
    # Without the policy the handshake itself succeeds: the web certificate passes as an agent.
    async with AgentClient("web", "127.0.0.1", _context(ca, None), port=port) as client:
        with pytest.raises(AgentError) as caught:
            await client.health()
        assert not isinstance(caught.value, AgentCertificateInvalid)


async def test_a_revoked_agent_certificate_is_refused_after_the_revocation_and_listed_in_the_crl(
    nursery: trio.Nursery, db: Database, tmp_path: Path
) -> None:
    ca = _own_ca(tmp_path)
    fleet = await _start_fleet(nursery, ca, tmp_path, 2)
    policy = AgentPeerPolicy()
    ctx = _context(ca, policy)
    service = CertificateService(ca, db, client_context=ctx, policy=policy)
    await nursery.start(service.run)
    revoked_agent, other = fleet.agents
    cert = x509.load_pem_x509_certificate(fleet._cert_files[0].read_bytes())
    await db.run(
        lambda conn: record_certificate(
            conn, serial=cert.serial_number, kind="agent_server", subject="a", sans=[],
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            cert_pem="-",
        )
    )  # fmt: skip
    async with AgentClient("a", revoked_agent.address, ctx, port=revoked_agent.port) as client:
        assert (await client.health()).status == "healthy"
    await db.run(revoke_certificate, cert.serial_number)
    await service.revoked()
    async with AgentClient("a", revoked_agent.address, ctx, port=revoked_agent.port) as client:
        with pytest.raises(AgentCertificateInvalid, match="revoked"):
            await client.health()
    async with AgentClient("b", other.address, ctx, port=other.port) as client:
        assert (await client.health()).status == "healthy"
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


async def test_crl_is_re_signed_daily_and_the_client_certificate_renewed_at_two_thirds_of_its_life(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery, db: Database, tmp_path: Path
) -> None:
    mock_clock.autojump_threshold = 0.05  # database calls (worker threads) stay in real time
    ca = _own_ca(tmp_path)
    ca.renew(CertKind.MANAGER_CLIENT, lifetime=dt.timedelta(days=4))
    first = ca.current(CertKind.MANAGER_CLIENT)
    start = dt.datetime.now(dt.UTC)
    t0 = trio.current_time()

    def virtual_now() -> dt.datetime:
        return start + dt.timedelta(seconds=trio.current_time() - t0)

    policy = AgentPeerPolicy()
    service = CertificateService(
        ca, db, client_context=_context(ca, policy), policy=policy, now=virtual_now,
        timings=CertificateTimings(check_every_s=3600, policy_every_s=86_400),
    )  # fmt: skip
    await nursery.start(service.run)
    assert service.crl_signed == 1 and service.renewals == 0
    await trio.sleep(86_400 - 60)
    assert service.crl_signed == 1
    await trio.sleep(120)
    assert service.crl_signed == 2
    assert service.expiry()["crl"] > 6.9 * 86_400
    await trio.sleep(86_400)
    assert service.crl_signed == 3
    due = first.not_before + (first.not_after - first.not_before) * 2 / 3
    await trio.sleep((due - virtual_now()).total_seconds() - 60)
    assert service.renewals == 0
    await trio.sleep(3600 + 120)
    assert service.renewals == 1
    renewed = ca.current(CertKind.MANAGER_CLIENT)
    assert renewed.serial != first.serial
    assert renewed.not_after > first.not_after + dt.timedelta(days=300)
    assert first.serial in policy.not_agent and renewed.serial in policy.not_agent


async def test_client_certificate_renewed_while_200_agents_are_polled_without_a_failed_poll(
    nursery: trio.Nursery, db: Database, tmp_path: Path
) -> None:
    count = 200
    ca = _own_ca(tmp_path)
    ca.renew(CertKind.MANAGER_CLIENT, lifetime=dt.timedelta(hours=1))
    old = ca.current(CertKind.MANAGER_CLIENT)
    old_files = tmp_path / "old-client.pem"
    old_files.write_text(ca.client_cert_path.read_text() + ca.client_key_path.read_text())
    fleet = await _start_fleet(nursery, ca, tmp_path, count)
    shift = dt.timedelta()

    def shifted_now() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + shift

    policy = AgentPeerPolicy()
    ctx = _context(ca, policy)
    service = CertificateService(ca, db, client_context=ctx, policy=policy, now=shifted_now)
    await service.refresh_policy()
    failures: list[BaseException] = []
    polls = 0

    async def poll_round(clients: list[AgentClient]) -> None:
        async def one(client: AgentClient) -> None:
            nonlocal polls
            try:
                await client.health()
                polls += 1
            except AgentError as exc:
                failures.append(exc)

        async with trio.open_nursery() as round_:
            for client in clients:
                round_.start_soon(one, client)

    def clients_for() -> list[AgentClient]:
        return [AgentClient(f"a{i}", a.address, ctx, port=a.port, connect_timeout=20,
                            request_timeout=20) for i, a in enumerate(fleet.agents)]  # fmt: skip

    kept = clients_for()  # connections opened with the old certificate, kept alive
    await poll_round(kept)
    async with trio.open_nursery() as switch:
        switch.start_soon(poll_round, kept)  # in flight across the switch
        shift = dt.timedelta(minutes=45)  # past 2/3 of the hour
        assert await service.renew_due() == [CertKind.MANAGER_CLIENT]
    await poll_round(kept)
    fresh = clients_for()  # new connections: the new certificate
    await poll_round(fresh)
    assert failures == [] and polls == 4 * count
    # The agents now refuse the old certificate; the new connections do not present it.
    ca.write_crl([(old.serial, dt.datetime.now(dt.UTC))])
    await fleet.reload_crl()
    newest = clients_for()
    await poll_round(newest)
    assert failures == [] and polls == 5 * count
    old_ctx = agent_client_context(ca.root_cert_path, old_files, old_files)
    agent = fleet.agents[0]
    async with AgentClient("old", agent.address, old_ctx, port=agent.port) as client:
        with pytest.raises(TLSRejected):
            await client.health()
    for client in [*kept, *fresh, *newest]:
        await client.aclose()
