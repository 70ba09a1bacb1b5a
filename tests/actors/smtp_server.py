"""A real SMTP server for the notification tests: aiosmtpd in its own thread on loopback, which
records what it accepts or answers as told (refuse, require STARTTLS, check a login), and a
listener that accepts connections and never greets (a hung server)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ..conftest import Pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Recorder:
    """The server's handler: keeps every accepted message; ``refuse_data`` answers DATA with
    that reply instead."""

    refuse_data: str = ""
    messages: list[Message] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data
        self.messages.append(message_from_bytes(envelope.original_content))
        self.arrived.set()
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    recorder: Recorder
    client_context: ssl.SSLContext  # trusts the test CA (for STARTTLS)


class _Login:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.user,
            self.password,
        )
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535 itself


def _tls_files(pki: Pki, tmp: Path) -> ssl.SSLContext:
    issued = pki.ca.issue_agent(["127.0.0.1"])
    cert, key = tmp / "smtp.pem", tmp / "smtp.key"
    cert.write_text(issued.record.cert_pem + pki.ca.root_pem)
    key.write_text(issued.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextmanager
def smtp_server(
    pki: Pki,
    tmp: Path,
    *,
    starttls: bool = False,
    login: tuple[str, str] | None = None,
    refuse_data: str = "",
) -> Iterator[SmtpServer]:
    recorder = Recorder(refuse_data=refuse_data)
    kwargs: dict[str, Any] = {}
    if starttls:
        kwargs |= {"tls_context": _tls_files(pki, tmp), "require_starttls": True}
    if login:
        kwargs |= {"authenticator": _Login(*login), "auth_require_tls": starttls}
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        client = ssl.create_default_context(cafile=str(pki.ca.root_cert_path))
        yield SmtpServer(port, recorder, client)
    finally:
        controller.stop()


@contextmanager
def hung_server() -> Iterator[int]:
    """A port whose listener accepts (in the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port: int = s.getsockname()[1]
        yield port
