from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca import CAError, CANotInitialised, CertificateAuthority, CertKind


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_creates_root_client_web_and_crl(tmp_path: Path) -> None:
    ca, created = CertificateAuthority.init(tmp_path / "ca", web_names=["pm.example", "10.1.2.3"])
    assert [r.kind for r in created] == [
        CertKind.ROOT,
        CertKind.MANAGER_CLIENT,
        CertKind.WEB_SERVER,
    ]
    root = load(ca.root_cert_path)
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime < dt.timedelta(days=3651)
    for key_path in (ca.root_key_path, ca.client_key_path, ca.web_key_path):
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert eku(load(ca.client_cert_path)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    web = load(ca.web_cert_path)
    assert eku(web) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = web.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pm.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]


def test_init_is_idempotent_and_reissues_web_cert_on_new_names(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", web_names=["a.example"])
    _, again = CertificateAuthority.init(tmp_path / "ca", web_names=["a.example"])
    assert again == []
    _, changed = CertificateAuthority.init(tmp_path / "ca", web_names=["b.example"])
    assert [r.kind for r in changed] == [CertKind.WEB_SERVER]


def test_agent_certificate_is_server_auth_only_with_sans(tmp_path: Path) -> None:
    ca, _ = CertificateAuthority.init(tmp_path / "ca")
    issued = ca.issue_agent(["web01.example.com", "192.0.2.10"])
    cert = x509.load_pem_x509_certificate(issued.record.cert_pem.encode())
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert issued.record.sans == ("web01.example.com", "192.0.2.10")
    assert issued.record.serial_hex == format(cert.serial_number, "x")
    assert cert.issuer == ca.root_cert.subject
    with pytest.raises(CAError, match="at least one"):
        ca.issue_agent([])
    with pytest.raises(CAError, match="neither an IP address nor a DNS name"):
        ca.issue_agent(["bad name"])


def test_crl_lists_revoked_serials(tmp_path: Path) -> None:
    ca, _ = CertificateAuthority.init(tmp_path / "ca")
    issued = ca.issue_agent(["192.0.2.10"])
    ca.write_crl([(issued.record.serial, dt.datetime.now(dt.UTC))])
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(issued.record.serial) is not None
    assert crl.next_update_utc is not None and crl.next_update_utc > dt.datetime.now(dt.UTC)


def test_opening_a_missing_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CANotInitialised, match="ca init"):
        CertificateAuthority(tmp_path / "nothing")
