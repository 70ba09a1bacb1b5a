"""``ssl.SSLContext`` builders. Every context is TLS 1.3 only.

- ``agent_client_context``: the manager calling agents — presents the manager's client cert,
  trusts only our root, checks the agent's SAN against the address it connects to.
- ``web_server_context``: the browser-facing listener (no client certs).
- ``agent_server_context``: the simulator's agents — require a client cert from our root and check
  it against the CRL (a CRL that does not verify rejects everyone, like the real agent).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def agent_client_context(root: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Client context for agent calls; hostname checking stays on (SAN = FQDN/IP we issued)."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(root))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def web_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def agent_server_context(root: Path, cert: Path, key: Path, crl: Path | None) -> ssl.SSLContext:
    """Server context requiring a client cert from ``root``; revoked clients fail the handshake."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(root))
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        ctx.load_verify_locations(cafile=str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
