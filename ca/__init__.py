"""The internal CA: root, manager and agent certificates, CRL, TLS 1.3 contexts.

Imports nothing of ours. Blocking: call from worker threads.
"""

from .authority import (
    CertificateAuthority,
    CertificateRecord,
    CertKind,
    IssuedCertificate,
    load_record,
)
from .errors import CAError, CANotInitialised
from .tls import agent_client_context, agent_server_context, web_server_context

__all__ = [
    "CAError",
    "CANotInitialised",
    "CertKind",
    "CertificateAuthority",
    "CertificateRecord",
    "IssuedCertificate",
    "agent_client_context",
    "agent_server_context",
    "load_record",
    "web_server_context",
]
