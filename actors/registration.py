"""Validating what an operator types as a host (R-2.1). Pure, apart from ``resolve``.

Errors: ``RegistrationError`` (a ``ValueError`` naming the field) is the root;
``HostAlreadyRegistered`` is a duplicate name, ``AddressRefused`` an address or port the
``AddressPolicy`` refuses (field ``name`` or ``port``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

import trio

from storage import AuditArg, Conflict, Database, HostRow, insert_host, run_audited

from .address_policy import AddressPolicy, canonical_ipv4

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RegistrationError(ValueError):
    """The host cannot be registered (the message says why, naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def valid_group(name: str) -> bool:
    """Group names: a letter or digit, then letters, digits, ``_ . -`` (64 at most)."""
    return _GROUP.match(name) is not None


class HostAlreadyRegistered(RegistrationError):
    """A host of that name exists already."""

    def __init__(self, message: str) -> None:
        super().__init__("name", message)


class AddressRefused(RegistrationError):
    """The address policy refuses the host's address (field ``name``) or port (``port``)."""


def normalise_name(text: str) -> tuple[str, bool]:
    """Lower-case FQDN or IP literal; returns (name, is_ip). Raises RegistrationError."""
    name = text.strip().lower().rstrip(".")
    if not name:
        raise RegistrationError("name", "enter an FQDN or an IP address")
    try:
        return str(ipaddress.ip_address(name)), True
    except ValueError:
        pass
    canonical = canonical_ipv4(name)
    if canonical is not None:  # 2130706433, 0x7f000001, 127.1: what the resolver would reach
        return canonical, True
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


async def resolve(name: str, port: int, *, timeout: float) -> list[str]:
    """The IPv4 addresses of ``name`` (the agent listens on IPv4 only), first one first.

    Gives up after ``timeout`` seconds. Raises ``RegistrationError`` (field ``name``).
    """
    infos: list[tuple[Any, ...]] | None = None
    with trio.move_on_after(timeout):
        try:
            infos = await trio.socket.getaddrinfo(name, port, family=socket.AF_INET,
                                                  type=socket.SOCK_STREAM)  # fmt: skip
        except OSError as exc:
            raise RegistrationError(
                "name", f"{name} does not resolve: {exc.strerror or exc}"
            ) from None
    if infos is None:
        raise RegistrationError(
            "name", f"{name} did not resolve within {timeout:g} s (agents.resolve_timeout_s)"
        )
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RegistrationError("name", f"{name} has no IPv4 address")
    return addresses


async def checked_address(
    text: str, port: int, policy: AddressPolicy, *, resolve_timeout: float
) -> tuple[str, str]:
    """Normalise ``text``, resolve it if it is a name and apply ``policy`` to every address it
    resolves to and to ``port``. Returns (name, address). Raises ``RegistrationError``
    (``AddressRefused`` for the policy)."""
    normalised, is_ip = normalise_name(text)
    if (reason := policy.port_refusal(port)) is not None:
        raise AddressRefused("port", reason)
    if is_ip:
        if (reason := policy.refusal(normalised, port)) is not None:
            raise AddressRefused("name", reason)
        return normalised, normalised
    addresses = await resolve(normalised, port, timeout=resolve_timeout)
    for address in addresses:
        if (reason := policy.refusal(address, port)) is not None:
            raise AddressRefused("name", f"{normalised} resolves to {address}: {reason}")
    return normalised, addresses[0]


async def register(
    db: Database,
    name: str,
    *,
    port: int,
    policy: AddressPolicy,
    resolve_timeout: float = 5.0,
    display_name: str = "",
    groups: Sequence[str] = (),
    audit: AuditArg = None,
) -> HostRow:
    """Validate, check against ``policy``, resolve and store a host (and ``audit``'s entry,
    in the same transaction).

    Raises ``RegistrationError`` naming the field: ``AddressRefused`` for a refused address or
    port, ``HostAlreadyRegistered`` for a duplicate.
    """
    normalise_name(name)  # a malformed name is reported before anything else
    for group in groups:
        if not valid_group(group):
            raise RegistrationError("groups", f"{group!r} is not a valid group name")
    normalised, address = await checked_address(name, port, policy, resolve_timeout=resolve_timeout)
    try:
        return await run_audited(
            db,
            audit,
            lambda conn: insert_host(
                conn,
                name=normalised,
                address=address,
                port=port,
                display_name=display_name.strip(),
                groups=groups,
            ),
        )
    except Conflict as exc:
        raise HostAlreadyRegistered(str(exc)) from None
