"""`patch-manager ca …` against a real embedded PostgreSQL, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509

from .conftest import REPO


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "patch_manager",
            *args,
            "--data-dir",
            str(data_dir),
            "--conf-dir",
            str(data_dir / "conf"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PATCH_MANAGER_PG_FAST": "1"},
    )


def test_issue_revoke_and_export(tmp_dir: Path) -> None:
    data = tmp_dir / "data"
    result = run("ca", "init", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "3 certificate(s) created" in result.stdout

    out = tmp_dir / "out"
    result = run(
        "ca", "issue-agent", "web01.example.com", "192.0.2.7", "--out", str(out), data_dir=data
    )
    assert result.returncode == 0, result.stderr
    # One certificate per name, each in the agent's file layout.
    serials = [line.split("serial ", 1)[1].split()[0] for line in result.stdout.splitlines()]
    assert len(serials) == 2
    serial = serials[0]
    bundle = out / "web01.example.com"
    chain = x509.load_pem_x509_certificates((bundle / "server.pem").read_bytes())
    assert format(chain[0].serial_number, "x") == serial
    assert chain[1] == x509.load_pem_x509_certificate((bundle / "ca.pem").read_bytes())
    assert (bundle / "server.key.pem").stat().st_mode & 0o077 == 0
    assert (bundle / "crl.pem").read_bytes().startswith(b"-----BEGIN X509 CRL-----")
    ip_cert = x509.load_pem_x509_certificate((out / "192.0.2.7" / "server.pem").read_bytes())
    ip_san = ip_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in ip_san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    result = run("ca", "issue-agent", "a.example.com", "10.0.0.5", "--san", "--out", str(out),
                 data_dir=data)  # fmt: skip
    assert result.returncode == 0, result.stderr
    grouped = x509.load_pem_x509_certificate((out / "a.example.com" / "server.pem").read_bytes())
    names = grouped.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(list(names)) == 2

    before = (data / "ca" / "manager-client.crt").read_bytes()
    assert run("ca", "renew", data_dir=data).returncode == 1
    result = run("ca", "renew", "--manager", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert (data / "ca" / "manager-client.crt").read_bytes() != before
    result = run("ca", "renew", serials[1], "--out", str(tmp_dir / "renewed"), data_dir=data)
    assert result.returncode == 0, result.stderr
    again = x509.load_pem_x509_certificate(
        (tmp_dir / "renewed" / "192.0.2.7" / "server.pem").read_bytes()
    )
    assert format(again.serial_number, "x") != serials[1]
    result = run("ca", "renew", "abc123", data_dir=data)
    assert result.returncode == 1 and "no agent certificate with serial abc123" in result.stderr

    result = run("ca", "revoke", serial, data_dir=data)
    assert result.returncode == 0, result.stderr
    crl = x509.load_pem_x509_crl((data / "ca" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    result = run("ca", "revoke", "abc123", data_dir=data)
    assert result.returncode == 1
    assert "no certificate with serial abc123" in result.stderr
    # The manager's own certificates are renewed, not revoked (the API's 409 rule).
    own = x509.load_pem_x509_certificate((data / "ca" / "manager-client.crt").read_bytes())
    result = run("ca", "revoke", format(own.serial_number, "x"), data_dir=data)
    assert result.returncode == 1 and "renew it instead" in result.stderr, result.stderr

    result = run("ca", "export-root", data_dir=data)
    assert result.stdout.startswith("-----BEGIN CERTIFICATE-----")

    # Every issued certificate is recorded.
    result = run("ca", "list", data_dir=data)
    assert result.returncode == 0, result.stderr
    rows = sorted(tuple(line.split()[1:3]) for line in result.stdout.splitlines())
    assert rows == sorted(
        [
            ("root", "valid"),
            ("manager_client", "valid"),
            ("web_server", "valid"),
            ("manager_client", "valid"),
            ("agent_server", "revoked"),
            ("agent_server", "valid"),
            ("agent_server", "valid"),
            ("agent_server", "valid"),
        ]
    )
    assert f"{serial}  agent_server" in result.stdout
