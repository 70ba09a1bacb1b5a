"""The root key's optional passphrase (issue 14): from an environment variable or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca import CAError, CertificateAuthority, passphrase_from


def test_a_passphrase_encrypts_the_root_key_and_is_needed_to_open_the_ca(tmp_path: Path) -> None:
    ca, _ = CertificateAuthority.init(tmp_path / "ca", passphrase=b"correct horse")
    text = ca.root_key_path.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert ca.root_key_path.stat().st_mode & 0o077 == 0
    with pytest.raises(CAError, match=r"is encrypted: set pki\.ca_passphrase_env"):
        CertificateAuthority(tmp_path / "ca")
    with pytest.raises(CAError, match="wrong passphrase"):
        CertificateAuthority(tmp_path / "ca", passphrase=b"wrong")
    reopened = CertificateAuthority(tmp_path / "ca", passphrase=b"correct horse")
    assert reopened.issue_agent(["a.example.com"]).record.subject == "a.example.com"
    # The other keys (used for TLS by the running server) stay unencrypted files, 0600.
    assert ca.client_key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_setting_a_passphrase_on_an_existing_ca_encrypts_its_key(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca")
    CertificateAuthority(tmp_path / "ca", passphrase=b"later")
    assert (tmp_path / "ca" / "root.key").read_text().startswith("-----BEGIN ENCRYPTED")
    CertificateAuthority(tmp_path / "ca", passphrase=b"later")


def test_passphrase_comes_from_the_environment_or_a_file_and_a_missing_one_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert passphrase_from("", "") is None
    monkeypatch.setenv("PM_TEST_CA_PASS", "from env")
    assert passphrase_from("PM_TEST_CA_PASS", "") == b"from env"
    with pytest.raises(CAError, match="PM_TEST_CA_UNSET, which is not set"):
        passphrase_from("PM_TEST_CA_UNSET", "")
    secret = tmp_path / "pass"
    secret.write_text("from file\n")
    assert passphrase_from("", str(secret)) == b"from file"
    with pytest.raises(CAError, match=r"cannot read pki\.ca_passphrase_file"):
        passphrase_from("", str(tmp_path / "missing"))
