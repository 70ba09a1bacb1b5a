"""Reading, validating and merging the TOML configuration. Pure functions, no trio.

Errors: every problem found in the files is collected and raised together as one
``ConfigError`` whose ``problems`` name file, dotted key and reason.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .model import (
    AgentSettings,
    AuthSettings,
    ComplianceSettings,
    Config,
    DatabaseSettings,
    DiscoverySettings,
    EffectivePolicy,
    LoggingSettings,
    Overrides,
    PkiSettings,
    PollingPolicy,
    RetentionSettings,
    ServerSettings,
    SupervisionSettings,
)
from .schema import POLLING_KEYS, SECTIONS, Key

MAIN_FILE = "patch-manager.toml"
HOSTS_FILE = "hosts.toml"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists every reason, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), type(value).__name__
    )


def check_value(key: Key, value: object) -> tuple[object, str | None]:
    """Validate one raw TOML value against its key. Returns (normalised value, reason or None)."""

    def in_range(number: float) -> str | None:
        if isinstance(number, float) and not math.isfinite(number):
            return "must be a finite number"
        if key.minimum is not None and number < key.minimum:
            return f"must be at least {key.minimum:g} (got {number:g})"
        if key.maximum is not None and number > key.maximum:
            return f"must be at most {key.maximum:g} (got {number:g})"
        return None

    if key.kind == "bool":
        if not isinstance(value, bool):
            return value, f"must be true or false (got {_type_name(value)})"
        return value, None
    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be an integer (got {_type_name(value)})"
        return value, in_range(value)
    if key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"must be a number (got {_type_name(value)})"
        return float(value), in_range(value)
    if key.kind == "str":
        if not isinstance(value, str):
            return value, f"must be a string (got {_type_name(value)})"
        if key.choices and value not in key.choices:
            return value, f"must be one of {', '.join(key.choices)} (got {value!r})"
        return value, None
    # Lists.
    if not isinstance(value, list):
        return value, f"must be an array (got {_type_name(value)})"
    if not key.min_items <= len(value) <= key.max_items:
        return value, f"must have {key.min_items} to {key.max_items} entries (got {len(value)})"
    items: list[object] = []
    bad: list[str] = []  # every bad entry, not just the first
    for index, item in enumerate(value):
        if key.kind == "int_list":
            if isinstance(item, bool) or not isinstance(item, int):
                bad.append(f"entry {index} must be an integer (got {_type_name(item)})")
            elif (reason := in_range(item)) is not None:
                bad.append(f"entry {index} {reason}")
        elif not isinstance(item, str):
            bad.append(f"entry {index} must be a string (got {_type_name(item)})")
        items.append(item)
    if bad:
        return value, "; ".join(bad)
    return tuple(items), None


def _read_toml(path: Path, problems: list[Problem]) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(str(path), "", f"not valid TOML: {exc}"))
    except OSError as exc:
        problems.append(Problem(str(path), "", f"cannot be read: {exc.strerror}"))
    return {}


def _check_table(
    table: object, keys: Sequence[Key], file: str, prefix: str, problems: list[Problem]
) -> dict[str, object]:
    """Validate a TOML table against ``keys``; returns only the values that were set and valid."""
    if not isinstance(table, dict):
        problems.append(Problem(file, prefix, f"must be a table (got {_type_name(table)})"))
        return {}
    by_name = {k.name: k for k in keys}
    values: dict[str, object] = {}
    for name, raw in table.items():
        dotted = f"{prefix}.{name}"
        key = by_name.get(name)
        if key is None:
            known = ", ".join(sorted(by_name))
            problems.append(Problem(file, dotted, f"unknown key (known keys: {known})"))
            continue
        value, reason = check_value(key, raw)
        if reason is not None:
            problems.append(Problem(file, dotted, reason))
        else:
            values[name] = value
    return values


def _defaults(keys: Sequence[Key]) -> dict[str, object]:
    return {k.name: tuple(k.default) if isinstance(k.default, list) else k.default for k in keys}


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _is_host(text: str) -> bool:
    """An IP literal (IPv6 in brackets) or a DNS name."""
    try:
        ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text)
        return True
    except ValueError:
        pass
    return len(text) <= 253 and all(_HOST_LABEL.match(label) for label in text.split("."))


def _is_dns_name(text: str) -> bool:
    """Letters, digits and hyphens in dot-separated labels of 1-63 characters (RFC 1123)."""
    return 0 < len(text) <= 253 and all(_HOST_LABEL.match(label) for label in text.split("."))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _cross_checks(merged: Mapping[str, dict[str, object]], file: str) -> list[Problem]:
    problems: list[Problem] = []
    host, sep, port = str(merged["server"]["bind"]).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        problems.append(Problem(file, "server.bind", "must be HOST:PORT, e.g. 127.0.0.1:8443"))
    elif not _is_host(host):
        problems.append(
            Problem(file, "server.bind", f"{host!r} is neither an IP address nor a host name")
        )
    for name in merged["server"]["hostnames"]:  # type: ignore[attr-defined]
        if not _is_dns_name(str(name)):
            problems.append(Problem(file, "server.hostnames", f"{name!r} is not a DNS name"))
    for ip in merged["server"]["ip_addresses"]:  # type: ignore[attr-defined]
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            problems.append(Problem(file, "server.ip_addresses", f"{ip!r} is not an IP address"))
    for cidr in merged["agents"]["allow_addresses"]:  # type: ignore[attr-defined]
        try:
            ipaddress.IPv4Network(str(cidr).strip(), strict=False)
        except ValueError:
            problems.append(
                Problem(file, "agents.allow_addresses", f"{cidr!r} is not an IPv4 CIDR range")
            )
    for cidr in merged["pki"]["auto_approve_cidrs"]:  # type: ignore[attr-defined]
        try:
            ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            problems.append(
                Problem(file, "pki.auto_approve_cidrs", f"{cidr!r} is not a CIDR range")
            )
    sup = merged["supervision"]
    if float(sup["restart_min_s"]) > float(sup["restart_max_s"]):  # type: ignore[arg-type]
        problems.append(
            Problem(file, "supervision.restart_min_s", "must not exceed supervision.restart_max_s")
        )
    db = merged["database"]
    if db["binaries"] == "system" and not db["system_bin_dir"]:
        problems.append(
            Problem(file, "database.system_bin_dir", "is required when database.binaries = system")
        )
    return problems


def _check_overrides(
    data: dict[str, Any], file: str, problems: list[Problem]
) -> dict[str, dict[str, dict[str, object]]]:
    result: dict[str, dict[str, dict[str, object]]] = {"groups": {}, "hosts": {}}
    for top, table in data.items():
        if top not in result:
            problems.append(Problem(file, top, "unknown table (known: groups, hosts)"))
            continue
        if not isinstance(table, dict):
            problems.append(Problem(file, top, "must be a table"))
            continue
        for name, values in table.items():
            dotted = f"{top}.{name}" if _BARE_KEY.match(name) else f'{top}."{name}"'
            if top == "hosts" and not _is_host(name):
                problems.append(Problem(file, dotted, "is neither a host name nor an IP address"))
            result[top][name] = _check_table(values, POLLING_KEYS, file, dotted, problems)
    return result


def load(conf_dir: Path) -> Config:
    """Read ``patch-manager.toml`` and ``hosts.toml`` from ``conf_dir`` (both optional).

    Raises ``ConfigError`` with every problem found. Missing files mean built-in defaults.
    """
    problems: list[Problem] = []
    main_path = conf_dir / MAIN_FILE
    hosts_path = conf_dir / HOSTS_FILE
    main = _read_toml(main_path, problems)
    hosts = _read_toml(hosts_path, problems)

    merged: dict[str, dict[str, object]] = {}
    explicit: dict[str, dict[str, object]] = {}
    for section, keys in SECTIONS.items():
        explicit[section] = (
            _check_table(main[section], keys, str(main_path), section, problems)
            if section in main
            else {}
        )
        merged[section] = {**_defaults(keys), **explicit[section]}
    for section in main:
        if section not in SECTIONS:
            problems.append(
                Problem(str(main_path), section, f"unknown section (known: {', '.join(SECTIONS)})")
            )
    overrides = _check_overrides(hosts, str(hosts_path), problems)
    # Invalid values fell back to their defaults in ``merged``: cross-checking it cannot
    # report a problem twice, and the problems of every kind come out in one run.
    problems.extend(_cross_checks(merged, str(main_path)))
    if problems:
        raise ConfigError(problems)

    return Config(
        server=ServerSettings(**merged["server"]),  # type: ignore[arg-type]
        database=DatabaseSettings(**merged["database"]),  # type: ignore[arg-type]
        logging=LoggingSettings(**merged["logging"]),  # type: ignore[arg-type]
        agents=AgentSettings(**merged["agents"]),  # type: ignore[arg-type]
        polling=PollingPolicy(**merged["polling"]),  # type: ignore[arg-type]
        supervision=SupervisionSettings(**merged["supervision"]),  # type: ignore[arg-type]
        discovery=DiscoverySettings(**merged["discovery"]),  # type: ignore[arg-type]
        retention=RetentionSettings(**merged["retention"]),  # type: ignore[arg-type]
        polling_explicit=explicit["polling"],
        overrides=Overrides(groups=overrides["groups"], hosts=overrides["hosts"]),
        files=(main_path, hosts_path),
        compliance=ComplianceSettings(**merged["compliance"]),  # type: ignore[arg-type]
        auth=AuthSettings(**merged["auth"]),  # type: ignore[arg-type]
        pki=PkiSettings(**merged["pki"]),  # type: ignore[arg-type]
    )


def effective_policy(config: Config, host: str, groups: Sequence[str] = ()) -> EffectivePolicy:
    """Merge polling values: default < global < group < host.

    A host in several groups takes the groups in name order, so the alphabetically last group that
    sets a key wins; the origin says which one it was.
    """
    values: dict[str, object] = _defaults(POLLING_KEYS)
    origins = {name: "default" for name in values}
    for name, value in config.polling_explicit.items():
        values[name], origins[name] = value, "global"
    for group in sorted(groups):
        for name, value in config.overrides.groups.get(group, {}).items():
            values[name], origins[name] = value, f"group:{group}"
    for name, value in config.overrides.hosts.get(host, {}).items():
        values[name], origins[name] = value, "host"
    return EffectivePolicy(PollingPolicy(**values), origins)  # type: ignore[arg-type]


def permit_addresses(config: Config, cidrs: Sequence[str]) -> Config:
    """``config`` with ``cidrs`` added to ``agents.allow_addresses`` (those not there yet)."""
    allowed = config.agents.allow_addresses
    extra = tuple(c for c in cidrs if c not in allowed)
    return replace(config, agents=replace(config.agents, allow_addresses=(*allowed, *extra)))


def as_table(obj: object) -> dict[str, object]:
    """A settings dataclass as a plain dict (for printing and the API)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]
