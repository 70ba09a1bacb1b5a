"""Enrolment defects an independent review of issue 14 found: who may get a certificate for
which name, bounded and clean request bodies, agent renewal by re-enrolment, token expiry."""

from __future__ import annotations

import io
import re
import tarfile
from functools import partial
from pathlib import Path

import httpx2
import pytest
import trio
from asgi_lifespan import LifespanManager
from cryptography import x509

from actors import HealthState
from ca import CertKind
from patch_manager.runtime import record_certificates
from simulator.enrol import enrol_and_serve
from simulator.enrol import main as enrol_main
from storage import list_enrolments

from ..conftest import Pki, fleet_addresses
from .conftest import WebRig, assert_envelope, form_token
from .test_pki_enrol import agent_client, request_for
from .test_relay import serve

pytestmark = pytest.mark.timeout(90)


async def enrol(rig: WebRig, source: str, body: dict[str, object]) -> httpx2.Response:
    async with agent_client(rig, source) as agent:
        return await agent.post("/api/v1/enroll", json=body)


async def poll(rig: WebRig, token: str) -> dict[str, object]:
    async with agent_client(rig, "127.0.0.250") as agent:
        answer: dict[str, object] = (await agent.get(f"/api/v1/enroll/status/{token}")).json()
        return answer


def serial_of(bundle: dict[str, object]) -> int:
    return x509.load_pem_x509_certificates(str(bundle["server_crt"]).encode())[0].serial_number


async def test_enrol_answers_422_for_an_ip_literal_fqdn_a_non_ipv4_address_and_a_bad_machine_id(
    web_rig: WebRig,
) -> None:
    good = request_for("192.0.2.30", "v")
    cases = [
        ({"fqdn": "127.0.0.1"}, "fqdn"),
        ({"fqdn": "10.1"}, "fqdn"),
        ({"ip_address": "fe80::1%eth0"}, "ip_address"),
        ({"ip_address": "::1"}, "ip_address"),
        ({"ip_address": "169.254.1.1"}, "ip_address"),
        ({"ip_address": "0.0.0.0"}, "ip_address"),
        ({"ip_address": "224.0.0.1"}, "ip_address"),
        ({"machine_id": "a b"}, "machine_id"),
        ({"machine_id": "x" * 65}, "machine_id"),
        ({"machine_id": "\x1b[2J"}, "machine_id"),
    ]
    for change, field in cases:
        body = assert_envelope(await enrol(web_rig, "127.0.0.31", {**good, **change}), 422)
        assert set(body["details"]["fields"]) == {field}, change


async def test_enrol_strips_control_characters_and_bounds_hostname_and_os_details(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    body = {**request_for("192.0.2.32", "clean"), "hostname": "h\x1b[31mred\x07",
            "os_details": {"distro": "Ubu\x1b]0;x\x07ntu", "long": "y" * 1000, "n": 3}}  # fmt: skip
    assert (await enrol(web_rig, "127.0.0.32", body)).status_code == 202
    [row] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    assert row["hostname"] == "h[31mred"
    assert row["os_details"] == {"distro": "Ubu]0;xntu", "long": "y" * 256, "n": "3"}


async def test_enrol_answers_409_for_the_managers_own_names_and_another_hosts_display_name(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    await record_certificates(web_rig.db, [pki.ca.current(CertKind.WEB_SERVER)])
    manager_name = {**request_for("192.0.2.33", "mn"), "fqdn": "localhost"}
    assert_envelope(await enrol(web_rig, "127.0.0.33", manager_name), 409)
    manager_address = request_for("127.0.0.1", "ma")
    assert_envelope(await enrol(web_rig, "127.0.0.34", manager_address), 409)
    created = await client.post(
        "/api/v1/hosts", json={"name": "192.0.2.35", "display_name": "taken.example.com"}
    )
    assert created.status_code in (200, 201), created.text
    other = {**request_for("192.0.2.36", "tk"), "fqdn": "taken.example.com"}
    assert_envelope(await enrol(web_rig, "127.0.0.35", other), 409)


async def test_auto_approval_needs_the_request_to_come_from_the_address_it_claims(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    a, b, c, _ = fleet_addresses(3).split(".")
    inside = f"{a}.{b}.{c}"
    web_rig.system.certificates.auto_approval = ((f"{inside}.0/24",), "", "")
    response = await enrol(web_rig, f"{inside}.1", request_for(f"{inside}.2", "spoof"))
    assert (await poll(web_rig, response.json()["polling_token"]))["status"] == "pending"
    assert (await client.get("/api/v1/hosts")).json()["hosts"] == []


async def test_a_registered_machine_re_enrols_from_its_address_for_a_new_cert_on_the_same_host(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    address = fleet_addresses(1)
    first = (await enrol(web_rig, "127.0.0.40", request_for(address, "rn"))).json()
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    host_id = (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).json()["host_id"]
    old = await poll(web_rig, first["polling_token"])
    # agent-api §1.3: `--renew-certs` enrols again; it goes to the queue, not a 409.
    again = await enrol(web_rig, "127.0.0.41", request_for(address, "rn"))
    assert again.status_code == 202, again.text
    queue = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    [renewal] = [e for e in queue if e["status"] == "pending"]
    approved = await client.post(f"/api/v1/enrolments/{renewal['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["host_id"] == host_id
    new = await poll(web_rig, again.json()["polling_token"])
    assert new["status"] == "approved" and serial_of(new) != serial_of(old)
    assert [h["id"] for h in (await client.get("/api/v1/hosts")).json()["hosts"]] == [host_id]
    # The same machine id from another address is not a renewal.
    moved = await enrol(web_rig, "127.0.0.42", request_for("192.0.2.43", "rn"))
    assert_envelope(moved, 409)


async def test_an_approved_token_never_fetched_expires(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = (await enrol(web_rig, "127.0.0.44", request_for("192.0.2.44", "ex"))).json()
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    assert (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).is_success
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE enrolments SET expires_at = now() - interval '1 second' WHERE id = %s",
            (pending["id"],),
        )
    )
    assert await poll(web_rig, token["polling_token"]) == {"status": "notfound"}


async def test_two_simultaneous_polls_of_an_approved_request_issue_one_certificate(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = (await enrol(web_rig, "127.0.0.45", request_for("192.0.2.45", "tw"))).json()
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    assert (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).is_success
    answers: list[object] = []

    async def one() -> None:
        answers.append((await poll(web_rig, token["polling_token"]))["status"])

    async with trio.open_nursery() as both:
        both.start_soon(one)
        both.start_soon(one)
    assert sorted(map(str, answers)) == ["approved", "notfound"]
    count = await web_rig.db.run(
        lambda c: c.execute(
            "SELECT count(*) FROM certificates WHERE kind = 'agent_server'"
        ).fetchone()
    )
    assert count[0] == 1


async def test_enrolment_page_shows_the_real_agents_distro_and_version(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    assert (await enrol(web_rig, "127.0.0.46", request_for("192.0.2.46", "os"))).is_success
    page = await client.get("/enrolments")
    assert "Ubuntu 24.04" in page.text


async def test_metrics_and_dashboard_show_the_soonest_agent_certificate_expiry(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = (await enrol(web_rig, "127.0.0.47", request_for("192.0.2.47", "me"))).json()
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    assert (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).is_success
    assert (await poll(web_rig, token["polling_token"]))["status"] == "approved"
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE certificates SET not_after = now() + interval '3 days'"
            " WHERE kind = 'agent_server'"
        )
    )
    await web_rig.system.certificates.refresh_policy()
    metrics = (await client.get("/metrics")).text
    match = re.search(r'patchmgr_certificate_expiry_seconds\{kind="agent_server"\} (\d+)', metrics)
    assert match is not None and 2.9 * 86_400 < int(match[1]) <= 3 * 86_400
    page = (await client.get("/")).text
    assert re.search(r"The soonest agent certificate expires in (2\.9|3\.0) days\.", page)


async def test_repo_config_keyring_path_must_be_under_a_keyring_directory(
    client: httpx2.AsyncClient,
) -> None:
    base = {"distro_id": "debian", "gpg_public_key": "KEY", "sources_config": "deb x y z"}
    for bad in ("/etc/shadow", "etc/apt/keyrings/k.gpg", "/etc/apt/keyrings/../../shadow",
                "/etc/apt/keyrings/", "/usr/share/keyrings/a\nb.gpg"):  # fmt: skip
        body = assert_envelope(
            await client.post("/api/v1/repo-configs", json={**base, "keyring_path": bad}), 422
        )
        assert set(body["details"]["fields"]) == {"keyring_path"}, bad
    for good in ("", "/etc/apt/keyrings/lpa.gpg", "/usr/share/keyrings/lpa.gpg",
                 "/etc/pki/rpm-gpg/RPM-GPG-KEY-lpa"):  # fmt: skip
        saved = await client.post("/api/v1/repo-configs", json={**base, "keyring_path": good})
        assert saved.status_code == 200, saved.text


async def test_host_page_bundle_of_an_enrolled_host_keeps_its_fqdn_san(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = (await enrol(web_rig, "127.0.0.48", request_for("192.0.2.48", "hb"))).json()
    [pending] = (await client.get("/api/v1/enrolments")).json()["enrolments"]
    host_id = (await client.post(f"/api/v1/enrolments/{pending['id']}/approve")).json()["host_id"]
    assert (await poll(web_rig, token["polling_token"]))["status"] == "approved"
    page = await client.get(f"/hosts/{host_id}")
    response = await client.post(
        f"/hosts/{host_id}/certificate-bundle", data={"csrf_token": form_token(page.text)}
    )
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        extracted = tar.extractfile("server.pem")
        assert extracted is not None
        leaf = x509.load_pem_x509_certificates(extracted.read())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(str(v.value) for v in sans) == ["192.0.2.48", "hb.example.com"]


async def test_enrol_and_serve_enrols_a_simulated_agent_that_auto_approval_admits_and_is_polled(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki, tmp_path: Path
) -> None:
    async with LifespanManager(web_rig.app):
        base, _stop = await serve(nursery, web_rig, pki)
    address = fleet_addresses(1)
    web_rig.system.certificates.auto_approval = ((f"{address}/32",), "", "")
    with trio.fail_after(60):
        await nursery.start(
            partial(
                enrol_and_serve,
                base,
                tmp_path / "agent",
                address=address,
                port=12443,
                time_scale=0.002,
                poll_interval_s=0.05,
            )  # fmt: skip
        )
        [row] = await web_rig.db.run(list_enrolments)
        assert row.source_address == address and row.decided_by == "auto-approval"
        assert row.host_id is not None
        web_rig.system.handle.refresh([row.host_id])
        await web_rig.system.fleet.wait_until(
            lambda s: any(x.host_id == row.host_id and x.health is HealthState.HEALTHY for x in s)
        )


def test_simulator_enrol_command_refuses_an_address_outside_loopback_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["https://127.0.0.1:1", "--address", "192.0.2.1", "--dir", str(tmp_path)]
    assert enrol_main(argv) == 1
    assert capsys.readouterr().err == (
        "error: 192.0.2.1 is not a 127.0.0.0/8 address (simulated agents are)\n"
    )
