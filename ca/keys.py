"""Keys kept outside the database: the audit chain's HMAC key and the sealing key that encrypts
secrets stored in the database (TOTP seeds, the SMTP password, the OIDC client secret).

Each key is 32 random bytes in a file of its own under the data directory (created 0600 on
first use, never rewritten), or, when the named environment variable is set, taken from it
(base64, 32 bytes once decoded) and no file is written. A database dump alone therefore
reveals no sealed secret and cannot be used to forge an audit chain.

Blocking: call from worker threads (or before the event loop starts).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import CAError

KEY_BYTES = 32
AUDIT_KEY_FILE = "audit.key"
AUDIT_KEY_ENV = "PM_AUDIT_KEY"
SEALING_KEY_FILE = "sealing.key"
SEALING_KEY_ENV = "PM_SEALING_KEY"


class KeyFileError(CAError):
    """A key file or variable that cannot be used (wrong size, unreadable, bad base64)."""


def load_or_create_key(path: Path, env_var: str) -> bytes:
    """The key from ``env_var`` (base64) if set, else from ``path``, created 0600 if missing."""
    value = os.environ.get(env_var)
    if value:
        try:
            key = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{env_var} is not base64") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{env_var} must decode to {KEY_BYTES} bytes, not {len(key)}")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{path} must hold {KEY_BYTES} bytes, not {len(key)}") from None
        return key
    key = os.urandom(KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def audit_key(data_dir: Path) -> bytes:
    """The HMAC-SHA256 key of the audit chain (``PM_AUDIT_KEY`` or ``DATA_DIR/audit.key``)."""
    return load_or_create_key(data_dir / AUDIT_KEY_FILE, AUDIT_KEY_ENV)


class SealError(CAError):
    """A sealed value that this key cannot open (another key, or edited in the database)."""


class Sealer:
    """Authenticated encryption (Fernet: AES-128-CBC + HMAC-SHA256) of small secrets stored in
    the database, with a key kept outside it."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"a sealing key is {KEY_BYTES} bytes, not {len(key)}")
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Sealer:
        """The sealer keyed by ``PM_SEALING_KEY`` or ``DATA_DIR/sealing.key``."""
        return cls(load_or_create_key(data_dir / SEALING_KEY_FILE, SEALING_KEY_ENV))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SealError("a sealed secret cannot be opened with this sealing key") from None
