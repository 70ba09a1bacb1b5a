"""Validating what an operator types as a host (R-2.1). Pure, apart from ``resolve``."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence

import trio

from storage import Conflict, Database, HostRow, insert_host

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


async def register(
    db: Database,
    name: str,
    *,
    port: int,
    display_name: str = "",
    groups: Sequence[str] = (),
) -> HostRow:
    """Validate, resolve and store a host. Raises ``RegistrationError`` naming the field."""
    normalised, is_ip = normalise_name(name)
    if not 1 <= port <= 65535:
        raise RegistrationError("port", "must be between 1 and 65535")
    for group in groups:
        if not _GROUP.match(group):
            raise RegistrationError("groups", f"{group!r} is not a valid group name")
    address = normalised if is_ip else await resolve(normalised, port)
    try:
        return await db.run(
            lambda conn: insert_host(
                conn,
                name=normalised,
                address=address,
                port=port,
                display_name=display_name.strip(),
                groups=groups,
            )
        )
    except Conflict as exc:
        raise RegistrationError("name", str(exc)) from None
