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
    serial = result.stdout.split("serial ", 1)[1].split()[0]
    cert = x509.load_pem_x509_certificate((out / "web01.example.com.crt").read_bytes())
    assert format(cert.serial_number, "x") == serial
    assert (out / "web01.example.com.key").stat().st_mode & 0o077 == 0

    result = run("ca", "revoke", serial, data_dir=data)
    assert result.returncode == 0, result.stderr
    crl = x509.load_pem_x509_crl((data / "ca" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    result = run("ca", "revoke", "abc123", data_dir=data)
    assert result.returncode == 1
    assert "no certificate with serial abc123" in result.stderr

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
            ("agent_server", "revoked"),
        ]
    )
    assert f"{serial}  agent_server" in result.stdout
