"""Mutual TLS 1.3 both ways, with certificates from our own CA."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.agent_client import AgentClient
from actors.agent_errors import AgentCertificateInvalid, TLSRejected
from ca import CertificateAuthority, CertKind, agent_client_context
from simulator import Fleet, FleetSpec, SimAgent

from ..conftest import Pki, make_tmp_dir

pytestmark = pytest.mark.timeout(60)


def context_with(pki: Pki, cert_pem: str | None, key_pem: str | None, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(pki.ca.root_cert_path))
    if cert_pem is not None and key_pem is not None:
        (tmp / "c.pem").write_text(cert_pem + key_pem)
        ctx.load_cert_chain(str(tmp / "c.pem"))
    return ctx


async def health_with(agent: SimAgent, ctx: ssl.SSLContext) -> None:
    async with AgentClient("h", agent.address, ctx, port=agent.port, connect_timeout=3) as c:
        await c.health()


async def test_our_client_certificate_is_accepted(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    await health_with(fleet.agents[0], pki.client_context())


async def test_no_client_certificate_is_rejected(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    ctx = context_with(pki, None, None, make_tmp_dir("pm-tls-"))
    with pytest.raises(TLSRejected):
        await health_with(fleet.agents[0], ctx)


async def test_certificate_from_another_ca_is_rejected(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    other, _ = CertificateAuthority.init(make_tmp_dir("pm-rogue-") / "ca")
    rogue = other.issue(CertKind.MANAGER_CLIENT, "rogue", ())
    ctx = context_with(pki, rogue.record.cert_pem, rogue.key_pem, make_tmp_dir("pm-tls-"))
    with pytest.raises(TLSRejected):
        await health_with(fleet.agents[0], ctx)


async def test_expired_certificate_is_rejected(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    now = dt.datetime.now(dt.UTC)
    old = pki.ca.issue(
        CertKind.MANAGER_CLIENT,
        "old",
        (),
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    ctx = context_with(pki, old.record.cert_pem, old.key_pem, make_tmp_dir("pm-tls-"))
    with pytest.raises(TLSRejected):
        await health_with(fleet.agents[0], ctx)


async def test_revoked_certificate_is_rejected_after_crl_reload(nursery: trio.Nursery) -> None:
    # A CA of its own: revoking must not disturb the other tests' agents.
    root = make_tmp_dir("pm-crl-")
    ca, _ = CertificateAuthority.init(root / "ca")
    own = Pki(ca, root / "ca", root / "sim")
    fleet = Fleet(own.directory, own.state_dir, FleetSpec(count=1, base_address="127.99.1.1"))
    await nursery.start(fleet.run)
    victim = ca.issue(CertKind.MANAGER_CLIENT, "soon-revoked", ())
    ctx = context_with(own, victim.record.cert_pem, victim.key_pem, make_tmp_dir("pm-tls-"))
    await health_with(fleet.agents[0], ctx)  # fine before revocation
    ca.write_crl([(victim.record.serial, dt.datetime.now(dt.UTC))])
    await fleet.reload_crl()
    with pytest.raises(TLSRejected, match=r"revoked|closed"):
        await health_with(fleet.agents[0], ctx)
    await health_with(fleet.agents[0], own.client_context())  # others unaffected


async def test_tls_1_2_client_is_rejected(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    ctx = pki.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(TLSRejected, match="TLS"):
        await health_with(fleet.agents[0], ctx)


async def test_tls_reject_fault_refuses_everyone(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    fleet.agents[0].set_faults({"tls_reject": True})
    with pytest.raises(TLSRejected):
        await health_with(fleet.agents[0], pki.client_context())


async def test_client_refuses_an_agent_not_from_our_ca(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1)
    other, _ = CertificateAuthority.init(make_tmp_dir("pm-other-") / "ca")

    # Our client identity, but trusting a different root: the agent's cert does not verify.
    ctx = agent_client_context(
        other.root_cert_path, pki.ca.client_cert_path, pki.ca.client_key_path
    )
    with pytest.raises(AgentCertificateInvalid):
        await health_with(fleet.agents[0], ctx)


async def test_client_refuses_an_agent_whose_san_does_not_match(pki: Pki, start_fleet: Any) -> None:
    fleet = await start_fleet(1, san="none")  # CA_SETUP.md's recipe: no SAN at all
    with pytest.raises(AgentCertificateInvalid, match="not acceptable"):
        await health_with(fleet.agents[0], pki.client_context())
