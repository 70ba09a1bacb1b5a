"""The internal CA: root, manager and agent certificates, CRL, TLS 1.3 contexts.

Imports nothing of ours. Blocking: call from worker threads.
"""

from .authority import (
    CertificateAuthority,
    CertificateRecord,
    CertKind,
    IssuedCertificate,
    load_record,
    passphrase_from,
    renewal_due,
)
from .errors import CAError, CANotInitialised
from .keys import KeyFileError, Sealer, SealError, audit_key, load_or_create_key
from .tls import (
    AgentPeerPolicy,
    agent_client_context,
    agent_server_context,
    reload_certificate,
    web_server_context,
)

__all__ = [
    "AgentPeerPolicy",
    "CAError",
    "CANotInitialised",
    "CertKind",
    "CertificateAuthority",
    "CertificateRecord",
    "IssuedCertificate",
    "KeyFileError",
    "SealError",
    "Sealer",
    "agent_client_context",
    "agent_server_context",
    "audit_key",
    "load_or_create_key",
    "load_record",
    "passphrase_from",
    "reload_certificate",
    "renewal_due",
    "web_server_context",
]
