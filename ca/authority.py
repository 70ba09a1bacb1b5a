"""The internal certificate authority (R-8.1): one EC P-256 root that signs everything.

Files under the CA directory (keys 0600, never in the database):

- ``root.crt`` / ``root.key``                       the root CA (10 years)
- ``manager-client.crt`` / ``manager-client.key``   the manager's client cert for agent calls
- ``web.crt`` / ``web.key``                         the web UI's server cert
- ``crl.pem``                                       the current CRL

Every function here is blocking (key generation, file I/O): call it from a worker thread.
Issued certificates are returned as ``CertificateRecord`` values for the caller to store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CAError, CANotInitialised

ROOT_DAYS = 3650
LEAF_DAYS = 397
CRL_DAYS = 7
_BACKDATE = dt.timedelta(minutes=5)


class CertKind(enum.Enum):
    ROOT = "root"
    MANAGER_CLIENT = "manager_client"
    WEB_SERVER = "web_server"
    AGENT_SERVER = "agent_server"


@dataclass(frozen=True)
class CertificateRecord:
    """What we keep about an issued certificate (no private key)."""

    serial: int
    kind: CertKind
    subject: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    cert_pem: str

    @property
    def serial_hex(self) -> str:
        """The serial as agents list it in CRL checks: lower-case hex, no separators."""
        return format(self.serial, "x")


@dataclass(frozen=True)
class IssuedCertificate:
    record: CertificateRecord
    key_pem: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file created 0600 from the start (never briefly world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def passphrase_from(env_name: str, file_name: str) -> bytes | None:
    """The root key passphrase from the environment variable ``env_name`` or else the file
    ``file_name`` (trailing newline dropped); None when neither is configured. A configured
    source that is missing or empty is a ``CAError`` (never silently an unencrypted key)."""
    if env_name:
        value = os.environ.get(env_name, "")
        if not value:
            raise CAError(f"pki.ca_passphrase_env names {env_name}, which is not set or empty")
        return value.encode()
    if file_name:
        try:
            value = Path(file_name).read_text().rstrip("\n")
        except OSError as exc:
            raise CAError(
                f"cannot read pki.ca_passphrase_file {file_name}: {exc.strerror}"
            ) from None
        if not value:
            raise CAError(f"pki.ca_passphrase_file {file_name} is empty")
        return value.encode()
    return None


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or len(name) > 253 or any(c.isspace() for c in name):
                raise CAError(f"{name!r} is neither an IP address nor a DNS name") from None
            entries.append(x509.DNSName(name.lower()))
    return entries


def _record(cert: x509.Certificate, kind: CertKind) -> CertificateRecord:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        sans = ()
    return CertificateRecord(
        serial=cert.serial_number,
        kind=kind,
        subject=str(cn[0].value) if cn else "",
        sans=sans,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


class CertificateAuthority:
    """The root CA and the manager's own certificates under ``directory``.

    ``CertificateAuthority.init(directory, ...)`` creates what is missing and returns the CA;
    ``CertificateAuthority(directory)`` opens an existing one (``CANotInitialised`` otherwise).
    """

    def __init__(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self.passphrase = passphrase
        try:
            self._root_key = self._load_root_key(self.root_key_path.read_bytes(), passphrase)
            self.root_cert = x509.load_pem_x509_certificate(self.root_cert_path.read_bytes())
        except FileNotFoundError:
            raise CANotInitialised(
                f"no CA in {directory}; run `patch-manager ca init` (or start the server once)"
            ) from None

    def _load_root_key(self, data: bytes, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
        """The root key; a passphrase given for a key still stored in clear encrypts the file
        now (so setting the passphrase protects an existing CA at the next start)."""
        encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
        if encrypted and passphrase is None:
            raise CAError(
                f"{self.root_key_path} is encrypted: set pki.ca_passphrase_env or "
                "pki.ca_passphrase_file"
            )
        try:
            key = serialization.load_pem_private_key(
                data, password=passphrase if encrypted else None
            )
        except ValueError:
            raise CAError(f"cannot decrypt {self.root_key_path}: wrong passphrase") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{self.root_key_path} is not an EC private key")
        if passphrase is not None and not encrypted:
            _write_private(self.root_key_path, _key_pem(key, passphrase))
        return key

    # -- paths --------------------------------------------------------------------------------
    @property
    def root_cert_path(self) -> Path:
        return self.directory / "root.crt"

    @property
    def root_key_path(self) -> Path:
        return self.directory / "root.key"

    @property
    def client_cert_path(self) -> Path:
        return self.directory / "manager-client.crt"

    @property
    def client_key_path(self) -> Path:
        return self.directory / "manager-client.key"

    @property
    def web_cert_path(self) -> Path:
        return self.directory / "web.crt"

    @property
    def web_key_path(self) -> Path:
        return self.directory / "web.key"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def root_pem(self) -> str:
        return self.root_cert.public_bytes(serialization.Encoding.PEM).decode()

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        common_name: str = "Linux Patch Manager Root CA",
        web_names: Sequence[str] = ("localhost", "127.0.0.1"),
        passphrase: bytes | None = None,
    ) -> tuple[CertificateAuthority, list[CertificateRecord]]:
        """Create the root, the manager client cert, the web cert and an empty CRL if missing.

        Returns the CA and the records of every certificate created now (empty if all existed).
        A web cert whose SAN differs from ``web_names`` is re-issued.
        """
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        created: list[CertificateRecord] = []
        root_key_path = directory / "root.key"
        if not root_key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            now = _now()
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(now + dt.timedelta(days=ROOT_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )  # fmt: skip
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256())
            )
            _write_private(root_key_path, _key_pem(key, passphrase))
            _write_public(directory / "root.crt", cert.public_bytes(serialization.Encoding.PEM))
            created.append(_record(cert, CertKind.ROOT))
        ca = cls(directory, passphrase=passphrase)
        if not ca.client_cert_path.exists():
            issued = ca.issue(CertKind.MANAGER_CLIENT, "patch-manager", ())
            ca._save_pair(ca.client_cert_path, ca.client_key_path, issued)
            created.append(issued.record)
        if ca._web_names() != tuple(sorted(n.lower() for n in web_names)):
            issued = ca.issue(CertKind.WEB_SERVER, web_names[0] if web_names else "patch-manager",
                              web_names)  # fmt: skip
            ca._save_pair(ca.web_cert_path, ca.web_key_path, issued)
            created.append(issued.record)
        if not ca.crl_path.exists():
            ca.write_crl(())
        return ca, created

    def _web_names(self) -> tuple[str, ...] | None:
        try:
            cert = x509.load_pem_x509_certificate(self.web_cert_path.read_bytes())
        except FileNotFoundError:
            return None
        return tuple(sorted(_record(cert, CertKind.WEB_SERVER).sans))

    def _save_pair(self, cert_path: Path, key_path: Path, issued: IssuedCertificate) -> None:
        _write_private(key_path, issued.key_pem.encode())
        _write_public(cert_path, issued.record.cert_pem.encode())

    # -- issuing ------------------------------------------------------------------------------
    def issue(
        self,
        kind: CertKind,
        common_name: str,
        names: Iterable[str],
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """Sign a new leaf certificate with a fresh P-256 key.

        ``names`` (DNS names and/or IP addresses) go in the SAN. Agent and web certs get EKU
        serverAuth only, the manager's cert clientAuth only, so that no agent key can act as a
        client against other agents.
        """
        if kind is CertKind.ROOT:
            raise CAError("the root is created by init(), not issued")
        eku = (
            [ExtendedKeyUsageOID.CLIENT_AUTH]
            if kind is CertKind.MANAGER_CLIENT
            else [ExtendedKeyUsageOID.SERVER_AUTH]
        )
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        start = not_before or now - _BACKDATE
        end = not_after or now + dt.timedelta(days=LEAF_DAYS)
        if end <= start:
            raise CAError("not_after must be later than not_before")
        ca_ski = self.root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.root_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        sans = _san_entries(names)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._root_key, hashes.SHA256())
        return IssuedCertificate(_record(cert, kind), _key_pem(key).decode())

    def issue_agent(self, names: Sequence[str]) -> IssuedCertificate:
        """An agent server certificate for a host known by ``names`` (FQDN and/or IP)."""
        if not names:
            raise CAError("an agent certificate needs at least one FQDN or IP address")
        return self.issue(CertKind.AGENT_SERVER, names[0], names)

    def write_agent_bundle(self, directory: Path, issued: IssuedCertificate) -> Path:
        """Write an agent's files as the agent names them (agent-api §7.1): ``ca.pem`` (the
        root), ``server.pem`` (leaf then root), ``server.key.pem`` (0600), ``crl.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        _write_public(directory / "ca.pem", self.root_pem.encode())
        _write_public(directory / "server.pem", (issued.record.cert_pem + self.root_pem).encode())
        _write_private(directory / "server.key.pem", issued.key_pem.encode())
        if self.crl_path.exists():
            _write_public(directory / "crl.pem", self.crl_path.read_bytes())
        return directory

    # -- revocation ---------------------------------------------------------------------------
    def build_crl(
        self,
        revoked: Iterable[tuple[int, dt.datetime]],
        *,
        days: int = CRL_DAYS,
        now: dt.datetime | None = None,
    ) -> bytes:
        """A PEM CRL listing ``(serial, revoked_at)`` pairs, valid for ``days`` from ``now``."""
        now = now or _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=days))
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(self._root_key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)

    def write_crl(
        self,
        revoked: Iterable[tuple[int, dt.datetime]],
        *,
        days: int = CRL_DAYS,
        now: dt.datetime | None = None,
    ) -> Path:
        _write_public(self.crl_path, self.build_crl(revoked, days=days, now=now))
        return self.crl_path

    def crl_next_update(self) -> dt.datetime | None:
        """When the CRL on disk stops being current (None when there is none)."""
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except FileNotFoundError:
            return None
        return crl.next_update_utc

    # -- the manager's own certificates -------------------------------------------------------
    def current(self, kind: CertKind) -> CertificateRecord:
        """The certificate in use for ``kind`` (root, manager client or web server)."""
        paths = {
            CertKind.ROOT: self.root_cert_path,
            CertKind.MANAGER_CLIENT: self.client_cert_path,
            CertKind.WEB_SERVER: self.web_cert_path,
        }
        if kind not in paths:
            raise CAError(f"the manager holds no {kind.value} certificate of its own")
        try:
            return load_record(paths[kind].read_bytes(), kind)
        except FileNotFoundError:
            raise CANotInitialised(
                f"{paths[kind]} is missing; run `patch-manager ca init`"
            ) from None

    def own_serials(self) -> set[int]:
        """Serials of the root and the manager's own certificates (never acceptable as agents)."""
        serials = {self.root_cert.serial_number}
        for kind in (CertKind.MANAGER_CLIENT, CertKind.WEB_SERVER):
            with contextlib.suppress(CANotInitialised):
                serials.add(self.current(kind).serial)
        return serials

    def renew(self, kind: CertKind, *, lifetime: dt.timedelta | None = None) -> IssuedCertificate:
        """Issue a successor of the manager's client or web certificate (same subject and names,
        fresh key) and replace the files. The old certificate stays valid until it expires, so
        connections made with it keep working (the overlap)."""
        if kind not in (CertKind.MANAGER_CLIENT, CertKind.WEB_SERVER):
            raise CAError("only the manager client and web certificates are renewed in place")
        old = self.current(kind)
        not_after = _now() + lifetime if lifetime is not None else None
        issued = self.issue(kind, old.subject, old.sans, not_after=not_after)
        if kind is CertKind.MANAGER_CLIENT:
            self._save_pair(self.client_cert_path, self.client_key_path, issued)
        else:
            self._save_pair(self.web_cert_path, self.web_key_path, issued)
        return issued


def renewal_due(record: CertificateRecord, ratio: float) -> dt.datetime:
    """When ``record`` should be renewed: after ``ratio`` of its lifetime (2/3 by default)."""
    return record.not_before + (record.not_after - record.not_before) * ratio


def load_record(cert_pem: str | bytes, kind: CertKind) -> CertificateRecord:
    """A record for an existing PEM certificate."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    return _record(x509.load_pem_x509_certificate(data), kind)
