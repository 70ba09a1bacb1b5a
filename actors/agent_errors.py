"""Everything that can go wrong talking to an agent, as one hierarchy the actors act on.

``AgentError`` (``host``, ``transient``)
 ├── ``TransportError``            no HTTP answer at all                       transient
 │    ├── ``Unreachable``          refused, DNS failure, connect timeout
 │    ├── ``AgentTimeout``         connected, but no (complete) answer in time
 │    ├── ``TLSRejected``          the agent refused our client certificate (or hung up right
 │    │                            after the handshake: revoked/expired cert, or IP not
 │    │                            whitelisted in "close" mode — indistinguishable under TLS 1.3)
 │    │    └── ``ConnectionClosed``  no TLS alert: the connection was closed without an answer
 │    │                            after the request was written (a whitelist drop, a refused
 │    │                            certificate, or a crash mid-request): for a mutation the
 │    │                            outcome is unclear, unlike a TLS alert, which means the
 │    │                            agent never processed anything
 │    └── ``AgentCertificateInvalid``  *we* refused the agent: not from our CA / SAN mismatch
 │                                      (not transient: retrying cannot help)
 ├── ``NotWhitelisted``            HTTP 403 from the agent's IP whitelist       not transient
 ├── ``RateLimited``               text/plain 429 + Retry-After                transient
 ├── ``AdmissionRefused``          JSON 429/409 (QUEUE_FULL, ADMISSION_FROZEN, REBOOT_BLOCKED…)
 ├── ``ProtocolError``             the answer is not what the agent's contract promises
 │                                 (text/plain 400, 405, bad JSON, missing fields)
 └── ``AgentRequestError``         an enveloped error (PKG_NOT_FOUND, VALIDATION_ERROR, …)

``retry_after`` (seconds) is set whenever the agent sent ``Retry-After``.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    transient = False

    def __init__(self, host: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message
        self.retry_after = retry_after


class TransportError(AgentError):
    transient = True


class Unreachable(TransportError):
    pass


class AgentTimeout(TransportError):
    pass


class TLSRejected(TransportError):
    pass


class ConnectionClosed(TLSRejected):
    """Closed without an answer and without a TLS alert: the request may have been handled."""


class AgentCertificateInvalid(TransportError):
    transient = False


class NotWhitelisted(AgentError):
    pass


class RateLimited(AgentError):
    transient = True


class ProtocolError(AgentError):
    def __init__(self, host: str, message: str, *, status: int | None = None) -> None:
        super().__init__(host, message)
        self.status = status


class AgentRequestError(AgentError):
    """The agent answered with its error envelope."""

    def __init__(
        self,
        host: str,
        *,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(host, f"{code} ({status}): {message}", retry_after=retry_after)
        self.status = status
        self.code = code
        self.agent_message = message
        self.details = details
        self.transient = retryable


class AdmissionRefused(AgentRequestError):
    """The agent will not take a new job now (single slot, queue full, reboot reserved…)."""
