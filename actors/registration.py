"""Validating what an operator types as a host (R-2.1). Pure, apart from ``resolve``."""

from __future__ import annotations

import ipaddress
import re
import socket

import trio

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class RegistrationError(ValueError):
    """The host cannot be registered (the message says why, naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def normalise_name(text: str) -> tuple[str, bool]:
    """Lower-case FQDN or IP literal; returns (name, is_ip). Raises RegistrationError."""
    name = text.strip().lower().rstrip(".")
    if not name:
        raise RegistrationError("name", "enter an FQDN or an IP address")
    try:
        return str(ipaddress.ip_address(name)), True
    except ValueError:
        pass
    if len(name) > 253:
        raise RegistrationError("name", "an FQDN has at most 253 characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise RegistrationError(
                "name", f"{text.strip()!r} is neither an IP address nor a valid FQDN "
                f"(label {label!r}: letters, digits and hyphens, 1 to 63 characters)"
            )  # fmt: skip
    if labels[-1].isdigit():
        raise RegistrationError("name", f"{text.strip()!r} looks like a malformed IP address")
    return name, False


async def resolve(name: str, port: int) -> str:
    """The first IPv4 address of ``name`` (the agent listens on IPv4 only)."""
    try:
        infos = await trio.socket.getaddrinfo(name, port, family=socket.AF_INET,
                                              type=socket.SOCK_STREAM)  # fmt: skip
    except OSError as exc:
        raise RegistrationError("name", f"{name} does not resolve: {exc.strerror or exc}") from None
    if not infos:
        raise RegistrationError("name", f"{name} has no IPv4 address")
    return str(infos[0][4][0])
