"""Agent enrolment (agent-api §7.1, issue 14): the protocol as the agent speaks it, the approval
queue, and a simulated agent going from nothing to healthy over real TLS."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest
import trio
from asgi_lifespan import LifespanManager
from cryptography import x509

from actors import HealthState
from actors.agent_client import AgentClient
from actors.agent_errors import TLSRejected
from ca import CertificateAuthority, CertKind
from patch_manager.runtime import record_certificates
from simulator.catalog import generate_profile
from simulator.enrol import EnrolledFiles, enrol, enrolled_agent, refresh_crl
from storage import create_enrolment

from ..conftest import Pki, fleet_addresses
from .conftest import WebRig, assert_envelope, form_token
from .test_relay import serve

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA of this test's own: these tests revoke and renew the manager's certificates."""
    ca, _ = CertificateAuthority.init(tmp_path / "own-ca")
    return Pki(ca, tmp_path / "own-ca", tmp_path / "sim")


def request_for(address: str, machine: str = "m-1") -> dict[str, object]:
    """The payload shape of the real agent (src/enroll/identity.rs get_os_details)."""
    return {"machine_id": machine, "fqdn": f"{machine}.example.com", "ip_address": address,
            "hostname": machine,
            "os_details": {"distro": "Ubuntu", "version": "24.04", "id_like": "debian",
                           "codename": "noble", "kernel": "6.8.0-45-generic"}}  # fmt: skip


def agent_client(rig: WebRig, source: str) -> httpx2.AsyncClient:
    """An unauthenticated client whose requests come from ``source`` (the rate limit's key)."""
    transport = httpx2.ASGITransport(app=rig.app, client=(source, 40000))
    return httpx2.AsyncClient(transport=transport, base_url="http://testserver")


async def test_enrolment_pending_then_approved_hands_the_bundle_over_once(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    address = fleet_addresses(1)
    async with agent_client(web_rig, "127.0.0.1") as agent:
        response = await agent.post("/api/v1/enroll", json=request_for(address))
        assert response.status_code == 202, response.text
        token = response.json()["polling_token"]
        assert (await agent.get(f"/api/v1/enroll/status/{token}")).json() == {"status": "pending"}
        queue = (await client.get("/api/v1/enrolments")).json()["enrolments"]
        [pending] = [e for e in queue if e["status"] == "pending"]
        assert pending["fqdn"] == "m-1.example.com" and pending["ip_address"] == address
        assert pending["source_address"] == "127.0.0.1"
        assert pending["os_details"]["version"] == "24.04"
        await client.post("/api/v1/groups", json={"name": "enrolled"})
        approved = await client.post(
            f"/api/v1/enrolments/{pending['id']}/approve", json={"group": "enrolled"}
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["host_id"] is not None
        bundle = (await agent.get(f"/api/v1/enroll/status/{token}")).json()
        assert bundle["status"] == "approved"
        chain = x509.load_pem_x509_certificates(bundle["server_crt"].encode())
        sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(str(v.value) for v in sans) == sorted(["m-1.example.com", address])
        assert bundle["ca_crt"] == pki.ca.root_pem
        assert bundle["server_key"].startswith("-----BEGIN PRIVATE KEY-----")
        assert bundle["crl_pem"].startswith("-----BEGIN X509 CRL-----")
        # The key is handed over once and never stored.
        again = await agent.get(f"/api/v1/enroll/status/{token}")
        assert again.json() == {"status": "notfound"}
        stored = await web_rig.db.run(
            lambda c: c.execute(
                "SELECT count(*) FROM certificates WHERE cert_pem LIKE %s", ("%PRIVATE KEY%",)
            ).fetchone()  # fmt: skip
        )
        assert stored[0] == 0
        # The address is registered now: another machine claiming it is a conflict.
    async with agent_client(web_rig, "127.0.0.2") as agent:
        other = await agent.post("/api/v1/enroll", json=request_for(address, "m-2"))
        assert_envelope(other, 409)
    hosts = (await client.get("/api/v1/hosts")).json()["hosts"]
    assert any(h["name"] == address and h["display_name"] == "m-1.example.com" for h in hosts)


async def test_denied_expired_unknown_and_superseded_tokens(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    async with agent_client(web_rig, "127.0.0.3") as agent:
        token = (await agent.post("/api/v1/enroll", json=request_for("192.0.2.10", "d"))).json()[
            "polling_token"
        ]
    queue = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    denied = await client.post(f"/api/v1/enrolments/{queue[0]['id']}/deny")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert_envelope(await client.post(f"/api/v1/enrolments/{queue[0]['id']}/approve"), 409)
    async with agent_client(web_rig, "127.0.0.4") as agent:
        assert (await agent.get(f"/api/v1/enroll/status/{token}")).json()["status"] == "denied"
        assert (await agent.get("/api/v1/enroll/status/nope")).json()["status"] == "notfound"
        # The same machine twice: the second request supersedes the first.
        first = (await agent.post("/api/v1/enroll", json=request_for("192.0.2.11", "t"))).json()
    async with agent_client(web_rig, "127.0.0.5") as agent:
        second = (await agent.post("/api/v1/enroll", json=request_for("192.0.2.11", "t"))).json()
        old = await agent.get(f"/api/v1/enroll/status/{first['polling_token']}")
        assert old.json()["status"] == "notfound"
        new = await agent.get(f"/api/v1/enroll/status/{second['polling_token']}")
        assert new.json()["status"] == "pending"
        # An expired token answers notfound and cannot be approved.
        expired_token = "expired-token"
        enrolment_id = await web_rig.db.run(
            lambda c: create_enrolment(
                c, token_sha256=hashlib.sha256(expired_token.encode()).hexdigest(),
                machine_id="x", fqdn="x.example.com", ip_address="192.0.2.12", hostname="x",
                os_details={}, source_address="127.0.0.9",
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
            )
        )  # fmt: skip
        answer = await agent.get(f"/api/v1/enroll/status/{expired_token}")
        assert answer.json()["status"] == "notfound"
    assert_envelope(await client.post(f"/api/v1/enrolments/{enrolment_id}/approve"), 409)
    assert_envelope(await client.post("/api/v1/enrolments/987654321/approve"), 404)


async def test_enrolment_is_rate_limited_per_source_address_and_checks_its_body(
    web_rig: WebRig,
) -> None:
    async with agent_client(web_rig, "127.0.0.6") as agent:
        assert (
            await agent.post("/api/v1/enroll", json=request_for("192.0.2.20", "r1"))
        ).status_code == 202
        limited = await agent.post("/api/v1/enroll", json=request_for("192.0.2.21", "r2"))
        assert_envelope(limited, 429)
    async with agent_client(web_rig, "127.0.0.7") as agent:
        bad = await agent.post("/api/v1/enroll", json={"machine_id": "x", "fqdn": "a b",
                                                       "ip_address": "300.1.1.1"})  # fmt: skip
        body = assert_envelope(bad, 422)
        assert set(body["details"]["fields"]) == {"fqdn", "ip_address"}


async def test_a_simulated_agent_enrols_is_approved_and_is_polled_healthy(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki, tmp_path: Path
) -> None:
    async with LifespanManager(web_rig.app):
        base, _stop = await serve(nursery, web_rig, pki)
    address = fleet_addresses(1)
    polled = trio.Event()
    result: dict[str, object] = {}

    async def enrol_agent() -> None:
        result["files"] = await enrol(
            base, tmp_path / "agent", machine_id="sim-1", fqdn="sim-1.example.com",
            ip_address=address, poll_interval_s=0.05, polled=polled,
        )  # fmt: skip

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            inner.start_soon(enrol_agent)
            await polled.wait()
            [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
            response = await client.post(f"/api/v1/enrolments/{pending['id']}/approve")
            assert response.status_code == 200, response.text
        files = result["files"]
        assert isinstance(files, EnrolledFiles)
        agent, _ = enrolled_agent(files, address, 12443, generate_profile(0, 1),
                                         time_scale=0.002)  # fmt: skip
        await nursery.start(agent.run)
        host_id = response.json()["host_id"]
        web_rig.system.handle.refresh([host_id])
        await web_rig.system.fleet.wait_until(
            lambda s: any(x.host_id == host_id and x.health is HealthState.HEALTHY for x in s)
        )


async def test_the_agent_fetches_the_crl_from_the_manager_and_then_refuses_a_revoked_client_cert(
    nursery: trio.Nursery, web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki, tmp_path: Path
) -> None:
    async with LifespanManager(web_rig.app):
        base, _stop = await serve(nursery, web_rig, pki)
    address = fleet_addresses(1)
    polled = trio.Event()
    result: dict[str, EnrolledFiles] = {}

    async def enrol_agent() -> None:
        result["files"] = await enrol(
            base, tmp_path / "agent", machine_id="sim-2", fqdn="sim-2.example.com",
            ip_address=address, poll_interval_s=0.05, polled=polled,
        )  # fmt: skip

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            inner.start_soon(enrol_agent)
            await polled.wait()
            [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
            assert (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).is_success
        files = result["files"]
        agent, contexts = enrolled_agent(files, address, 12443, generate_profile(1, 1),
                                         time_scale=0.002)  # fmt: skip
        await nursery.start(agent.run)
        async with AgentClient("a", address, pki.client_context()) as manager:
            assert (await manager.health()).status == "healthy"
        # Should the manager's client certificate be listed revoked (the CA refuses to revoke
        # its own: marked here directly), the CRL the manager serves lists it; the agent
        # fetches it and refuses that certificate.
        client_cert = pki.ca.current(CertKind.MANAGER_CLIENT)
        await record_certificates(web_rig.db, [client_cert])
        await web_rig.db.run(
            lambda c: c.execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = now() WHERE serial = %s",
                (Decimal(client_cert.serial),),
            )
        )
        await web_rig.system.certificates.revoked()
        await refresh_crl(base, files)
        crl = x509.load_pem_x509_crl((files.directory / "crl.pem").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(client_cert.serial) is not None
        contexts.reload()
        async with AgentClient("a", address, pki.client_context()) as manager:
            with pytest.raises(TLSRejected):
                await manager.health()


async def test_enrolment_page_shows_the_request_and_approves_it_into_a_group(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    address = fleet_addresses(1)
    async with agent_client(web_rig, "127.0.0.8") as agent:
        response = await agent.post("/api/v1/enroll", json=request_for(address, "pg"))
        token = response.json()["polling_token"]
    await client.post("/api/v1/groups", json={"name": "from-page"})
    page = await client.get("/enrolments")
    assert page.status_code == 200
    assert "pg.example.com" in page.text and address in page.text and "127.0.0.8" in page.text
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    approved = await client.post(
        f"/enrolments/{pending['id']}/approve",
        data={"group": "from-page", "csrf_token": form_token(page.text)},
    )
    assert approved.status_code == 303
    hosts = (await client.get("/api/v1/hosts?group=from-page")).json()["hosts"]
    assert [h["name"] for h in hosts] == [address]
    async with agent_client(web_rig, "127.0.0.8") as agent:
        answer = await agent.get(f"/api/v1/enroll/status/{token}")
        assert answer.json()["status"] == "approved"


async def test_the_approved_bundle_carries_the_repo_config_of_the_agents_distribution(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    config = {"distro_id": "ubuntu", "gpg_public_key": "KEY", "sources_config": "deb x y z",
              "keyring_path": "/etc/apt/keyrings/lpa-repo.gpg"}  # fmt: skip
    assert (await client.post("/api/v1/repo-configs", json=config)).status_code == 200
    address = fleet_addresses(1)
    body = request_for(address, "rc")  # os_details as the real agent sends them: distro = NAME
    async with agent_client(web_rig, "127.0.0.10") as agent:
        token = (await agent.post("/api/v1/enroll", json=body)).json()["polling_token"]
        [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
        assert (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).is_success
        bundle = (await agent.get(f"/api/v1/enroll/status/{token}")).json()
    assert bundle["status"] == "approved" and bundle["repo_config"] == config


async def test_auto_approval_needs_the_cidr_for_source_and_agent_and_the_bootstrap_token(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    a, b, c, _ = fleet_addresses(4).split(".")
    web_rig.system.certificates.auto_approval = ((f"{a}.{b}.{c}.0/24",), "s3cret", "auto")
    await client.post("/api/v1/groups", json={"name": "auto"})
    inside = f"{a}.{b}.{c}"

    async def enrol_from(source: str, address: str, machine: str, token: str) -> str:
        body = {**request_for(address, machine), "bootstrap_token": token}
        async with agent_client(web_rig, source) as agent:
            polling = (await agent.post("/api/v1/enroll", json=body)).json()["polling_token"]
            answer = await agent.get(f"/api/v1/enroll/status/{polling}")
            return str(answer.json()["status"])

    assert await enrol_from(f"{inside}.1", f"{inside}.1", "auto1", "s3cret") == "approved"
    assert await enrol_from(f"{inside}.2", f"{inside}.2", "auto2", "wrong") == "pending"
    assert await enrol_from("127.0.0.12", f"{inside}.3", "auto3", "s3cret") == "pending"
    hosts = (await client.get("/api/v1/hosts?group=auto")).json()["hosts"]
    assert [h["name"] for h in hosts] == [f"{inside}.1"]
    queue = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    assert {e["fqdn"]: e["decided_by"] for e in queue}["auto1.example.com"] == "auto-approval"
