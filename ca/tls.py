"""``ssl.SSLContext`` builders. Every context is TLS 1.3 only.

- ``agent_client_context``: the manager calling agents — presents the manager's client cert,
  trusts only our root, checks the agent's SAN against the address it connects to, and (with an
  ``AgentPeerPolicy``) refuses a server certificate that is revoked or was not issued as an agent
  certificate (the web UI's own certificate chains to the same root and has serverAuth too).
  Renewal swaps the client certificate in place (``reload_client_certificate``): new handshakes
  present the new one, connections already open keep theirs.
- ``web_server_context``: the browser-facing listener (no client certs).
- ``agent_server_context``: the simulator's agents — require a client cert from our root and check
  it against the CRL (a CRL that does not verify rejects everyone, like the real agent).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class AgentPeerPolicy:
    """Serials the manager refuses as agent server certificates: revoked ones and every
    certificate the CA issued for something other than an agent (root, web UI, manager client).

    Checked right after each handshake (OpenSSL has no notion of "issued as agent"); replaced
    as a whole by the certificate service (``update``), read by every handshake.
    """

    def __init__(self, revoked: Iterable[int] = (), not_agent: Iterable[int] = ()) -> None:
        self.revoked: frozenset[int] = frozenset(revoked)
        self.not_agent: frozenset[int] = frozenset(not_agent)
        self.refused_handshakes = 0

    def update(self, *, revoked: Iterable[int], not_agent: Iterable[int]) -> None:
        self.revoked = frozenset(revoked)
        self.not_agent = frozenset(not_agent)

    def problem(self, der: bytes) -> str | None:
        """Why the peer certificate ``der`` is refused, or None when it is acceptable."""
        serial = x509.load_der_x509_certificate(der).serial_number
        if serial in self.revoked:
            return f"the agent's certificate {serial:x} is revoked"
        if serial in self.not_agent:
            return f"the certificate {serial:x} was not issued as an agent certificate"
        return None


def _checked_object_class(policy: AgentPeerPolicy) -> type[ssl.SSLObject]:
    class _CheckedSSLObject(ssl.SSLObject):
        """trio's SSLStream (httpx and trio-websocket alike) drives handshakes through
        ``SSLObject.do_handshake``: the policy check runs once it completes."""

        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            problem = policy.problem(der) if der else "the agent sent no certificate"
            if problem is not None:
                policy.refused_handshakes += 1
                err = ssl.SSLCertVerificationError(1, problem)
                err.verify_message = problem
                err.verify_code = 23 if "revoked" in problem else 26  # X509_V_ERR_*
                raise err

    return _CheckedSSLObject


def agent_client_context(
    root: Path, cert: Path, key: Path, policy: AgentPeerPolicy | None = None
) -> ssl.SSLContext:
    """Client context for agent calls; hostname checking stays on (SAN = FQDN/IP we issued).

    With ``policy``, server certificates it refuses fail the connection with
    ``ssl.SSLCertVerificationError`` (so callers see "certificate not acceptable").
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(root))
    ctx.load_cert_chain(str(cert), str(key))
    if policy is not None:
        ctx.sslobject_class = _checked_object_class(policy)
    return ctx


def reload_certificate(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load a renewed certificate and key into a live context: handshakes from now on present
    it; connections already established are not touched (that is the overlap)."""
    ctx.load_cert_chain(str(cert), str(key))


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
