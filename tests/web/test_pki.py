"""Certificate API (issue 14): the public CRL, listing with expiry, renewal, revocation."""

from __future__ import annotations

import datetime as dt
import io
import re
import ssl
import tarfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx2
import pytest
import trio
from asgi_lifespan import LifespanManager
from cryptography import x509

from ca import CertificateAuthority, CertKind, web_server_context
from patch_manager.runtime import record_certificates
from web import WebListener, serve_web

from ..conftest import Pki, fleet_addresses
from .conftest import WebRig, assert_envelope, form_token


@pytest.fixture
async def anonymous_agent(web_rig: WebRig) -> AsyncIterator[httpx2.AsyncClient]:
    """A client without a session, as an agent calls the manager."""
    transport = httpx2.ASGITransport(app=web_rig.app, client=("127.0.0.9", 40000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA of this test's own: renewing must not touch the session's shared CA."""
    ca, _ = CertificateAuthority.init(tmp_path / "own-ca")
    return Pki(ca, tmp_path / "own-ca", tmp_path / "sim")


async def test_crl_is_served_without_a_session_as_pem_signed_by_the_root(
    web_rig: WebRig, anonymous: httpx2.AsyncClient, pki: Pki
) -> None:
    response = await anonymous.get("/api/v1/pki/crl.pem")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-pem-file")
    crl = x509.load_pem_x509_crl(response.content)
    assert crl.is_signature_valid(pki.ca.root_cert.public_key())  # type: ignore[arg-type]
    assert (await anonymous.get("/api/v1/certificates")).status_code == 401


async def test_revoking_an_agent_certificate_lists_it_in_the_served_crl_at_once(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    issued = pki.ca.issue_agent(["agent1.example.com", "10.0.0.1"])
    await record_certificates(web_rig.db, [issued.record])
    listing = (await client.get("/api/v1/certificates")).json()
    mine = next(c for c in listing["certificates"] if c["serial"] == issued.record.serial_hex)
    assert mine["kind"] == "agent_server" and mine["status"] == "valid"
    assert mine["sans"] == ["agent1.example.com", "10.0.0.1"]
    assert mine["expires_in_s"] > 396 * 86_400
    response = await client.post(
        "/api/v1/certificates/revoke", json={"serial": issued.record.serial_hex}
    )
    assert response.status_code == 200, response.text
    crl = x509.load_pem_x509_crl((await client.get("/api/v1/pki/crl.pem")).content)
    assert crl.get_revoked_certificate_by_serial_number(issued.record.serial) is not None
    assert issued.record.serial in web_rig.system.certificates.policy.revoked
    listing = (await client.get("/api/v1/certificates")).json()
    mine = next(c for c in listing["certificates"] if c["serial"] == issued.record.serial_hex)
    assert mine["status"] == "revoked"


async def test_revoke_refuses_bad_unknown_and_own_serials_with_4xx(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    web = pki.ca.current(CertKind.WEB_SERVER)
    await record_certificates(web_rig.db, [web])
    assert_envelope(await client.post("/api/v1/certificates/revoke", json={"serial": "xyz"}), 422)
    assert_envelope(
        await client.post("/api/v1/certificates/revoke", json={"serial": "abc123"}), 404
    )
    assert_envelope(
        await client.post("/api/v1/certificates/revoke", json={"serial": web.serial_hex}), 409
    )
    assert_envelope(
        await client.post("/api/v1/certificates/renew", json={"kind": "agent_server"}), 422
    )


async def test_renewing_the_web_certificate_replaces_it_and_metrics_show_every_expiry(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    before = pki.ca.current(CertKind.WEB_SERVER)
    response = await client.post("/api/v1/certificates/renew", json={"kind": "web_server"})
    assert response.status_code == 200, response.text
    after = pki.ca.current(CertKind.WEB_SERVER)
    assert response.json() == {"kind": "web_server", "serial": after.serial_hex}
    assert after.serial != before.serial and after.sans == before.sans
    metrics = (await client.get("/metrics")).text
    for kind in ("root", "manager_client", "web_server", "crl"):
        assert f'patchmgr_certificate_expiry_seconds{{kind="{kind}"}}' in metrics
    listing = (await client.get("/api/v1/certificates")).json()
    assert listing["expiry_s"]["web_server"] > 396 * 86_400


async def test_certificates_page_lists_expiry_and_revokes_through_its_form(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    issued = pki.ca.issue_agent(["agent2.example.com"])
    await record_certificates(web_rig.db, [issued.record])
    page = await client.get("/certificates")
    assert page.status_code == 200
    assert issued.record.serial_hex in page.text and "agent2.example.com" in page.text
    assert 'data-kind="manager_client">39' in page.text  # days to expiry of the client cert
    token = form_token(page.text)
    revoked = await client.post(
        "/certificates/revoke", data={"serial": issued.record.serial_hex, "csrf_token": token}
    )
    assert revoked.status_code == 303
    assert issued.record.serial in web_rig.system.certificates.policy.revoked
    bad = await client.post("/certificates/revoke", data={"serial": "zz", "csrf_token": token})
    assert bad.status_code == 422 and "hex digits" in bad.text


async def test_host_certificate_bundle_has_the_agents_files_and_a_new_certificate_for_the_host(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    address = fleet_addresses(1)
    host = (await client.post("/api/v1/hosts", json={"name": address})).json()
    page = await client.get(f"/hosts/{host['id']}")
    assert "Certificate bundle" in page.text
    response = await client.post(
        f"/hosts/{host['id']}/certificate-bundle", data={"csrf_token": form_token(page.text)}
    )
    assert response.status_code == 200
    assert f'filename="{address}-certificates.tar.gz"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"ca.pem", "server.pem", "server.key.pem", "crl.pem"}
        assert members["server.key.pem"].mode == 0o600

        def read(name: str) -> bytes:
            extracted = tar.extractfile(name)
            assert extracted is not None
            return extracted.read()

        leaf, root = x509.load_pem_x509_certificates(read("server.pem"))
        assert root == pki.ca.root_cert
        assert read("ca.pem").decode() == pki.ca.root_pem
        assert read("server.key.pem").startswith(b"-----BEGIN PRIVATE KEY-----")
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v.value) for v in sans] == [address]
    listing = (await client.get("/api/v1/certificates")).json()["certificates"]
    assert any(c["serial"] == format(leaf.serial_number, "x") for c in listing)
    missing = await client.post(
        "/hosts/987654321/certificate-bundle", data={"csrf_token": form_token(page.text)}
    )
    assert missing.status_code == 404


async def test_repo_config_is_stored_by_admins_served_to_agents_and_put_in_the_bundle(
    web_rig: WebRig, client: httpx2.AsyncClient, anonymous_agent: httpx2.AsyncClient
) -> None:
    config = {"distro_id": "debian", "gpg_public_key": "-----BEGIN PGP PUBLIC KEY BLOCK-----",
              "sources_config": "deb https://repo.example.com/debian bookworm main",
              "keyring_path": "/etc/apt/keyrings/lpa-repo.gpg"}  # fmt: skip
    assert (await client.post("/api/v1/repo-configs", json=config)).status_code == 200
    served = await anonymous_agent.get("/api/v1/pki/repo-config?distro_id=debian&codename=x")
    assert served.status_code == 200 and served.json() == config
    assert_envelope(await anonymous_agent.get("/api/v1/pki/repo-config?distro_id=arch"), 404)
    assert_envelope(await anonymous_agent.get("/api/v1/pki/repo-config"), 422)
    assert_envelope(await client.post("/api/v1/repo-configs", json={"distro_id": "Bad!"}), 422)
    listing = (await client.get("/api/v1/repo-configs")).json()["repo_configs"]
    assert listing == [config]
    deleted = await client.post("/api/v1/repo-configs/delete", json={"distro_id": "debian"})
    assert deleted.status_code == 204
    assert_envelope(await anonymous_agent.get("/api/v1/pki/repo-config?distro_id=debian"), 404)


async def test_renewed_web_certificate_is_served_to_new_connections_without_a_restart(
    nursery: trio.Nursery, web_rig: WebRig, pki: Pki
) -> None:
    context = web_server_context(pki.ca.web_cert_path, pki.ca.web_key_path)
    web_rig.system.certificates.web_context = context
    stop = trio.Event()
    listener = WebListener(
        "127.0.0.1:0", pki.ca.web_cert_path, pki.ca.web_key_path, ssl_context=context
    )
    async with LifespanManager(web_rig.app):
        urls = await nursery.start(partial(serve_web, web_rig.app, listener, stop.wait))
    host, port = urls[0].removeprefix("https://").rstrip("/").split(":")

    async def served_serial() -> int:
        client_ctx = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
        stream = await trio.open_ssl_over_tcp_stream(
            host, int(port), ssl_context=client_ctx, https_compatible=True
        )
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
        await stream.aclose()
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    before = await served_serial()
    assert before == pki.ca.current(CertKind.WEB_SERVER).serial
    renewed = await web_rig.system.certificates.renew(CertKind.WEB_SERVER)
    assert await served_serial() == renewed.serial != before
    stop.set()


async def test_dashboard_warns_admins_of_a_manager_certificate_close_to_expiry(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    assert "data-certificate-warning" not in (await client.get("/")).text
    pki.ca.renew(CertKind.MANAGER_CLIENT, lifetime=dt.timedelta(days=10))
    assert await web_rig.system.certificates.renew_due() == []  # picked up, not due yet
    page = (await client.get("/")).text
    assert re.search(r"The agent client certificate expires in (9\.9|10\.0) days\.", page)


async def test_certificates_page_issues_an_agent_certificate_as_the_agents_files(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    token = form_token((await client.get("/certificates")).text)
    response = await client.post(
        "/certificates/issue", data={"names": "web9.example.com, 192.0.2.9", "csrf_token": token}
    )
    assert response.status_code == 200
    assert (
        'filename="web9.example.com-certificates.tar.gz"' in response.headers["content-disposition"]
    )
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        assert sorted(tar.getnames()) == ["ca.pem", "crl.pem", "server.key.pem", "server.pem"]
    bad = await client.post("/certificates/issue", data={"names": "bad name!", "csrf_token": token})
    assert bad.status_code == 422 and "neither an IP address nor a DNS name" in bad.text
    empty = await client.post("/certificates/issue", data={"names": " ", "csrf_token": token})
    assert empty.status_code == 422


async def test_certificates_page_shows_each_agent_certificates_host_and_reissues_it(
    web_rig: WebRig, client: httpx2.AsyncClient, pki: Pki
) -> None:
    address = fleet_addresses(1)
    host = (await client.post("/api/v1/hosts", json={"name": address})).json()
    mine = pki.ca.issue_agent([f"agent-{host['id']}.example.com", address])
    stray = pki.ca.issue_agent(["nowhere.example.com"])
    await record_certificates(web_rig.db, [mine.record, stray.record])
    page = await client.get("/certificates")
    row = re.search(rf"<tr>\s*<td>agent_server</td>((?:(?!</tr>).)*{mine.record.serial_hex}"
                    r"(?:(?!</tr>).)*)</tr>", page.text, re.S)  # fmt: skip
    assert row is not None and f'<a href="/hosts/{host["id"]}">' in row[1]
    assert "stays valid until you revoke it" in row[1]
    other = re.search(rf"{stray.record.serial_hex}(?:(?!</tr>).)*</tr>", page.text, re.S)
    assert other is not None and "no host" in other[0]
    token = form_token(page.text)
    response = await client.post(
        "/certificates/reissue", data={"serial": mine.record.serial_hex, "csrf_token": token}
    )
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        extracted = tar.extractfile("server.pem")
        assert extracted is not None
        leaf, _ = x509.load_pem_x509_certificates(extracted.read())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v.value) for v in sans] == [f"agent-{host['id']}.example.com", address]
    listing = {c["serial"]: c for c in (await client.get("/api/v1/certificates")).json()[
        "certificates"]}  # fmt: skip
    assert listing[format(leaf.serial_number, "x")]["status"] == "valid"
    assert listing[mine.record.serial_hex]["status"] == "valid"  # the old one until revoked
    web = pki.ca.current(CertKind.WEB_SERVER)
    await record_certificates(web_rig.db, [web])
    for serial, status in (("zz", 422), ("abc123", 404), (web.serial_hex, 422)):
        refused = await client.post(
            "/certificates/reissue", data={"serial": serial, "csrf_token": token}
        )
        assert refused.status_code == status and 'role="alert"' in refused.text
