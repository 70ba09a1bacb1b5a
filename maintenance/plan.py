"""Deployment plans (issue 16 point 2): which of a host's pending patches a job changes, how the
hosts are cut into batches, and the drift between a plan and the host's pending list when the
job runs. Pure: the Deploy page, the JSON API, job creation and the host actors share it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# A window job's host without an enabled window occurrence within this horizon is skipped
# (NO_WINDOW) instead of waiting forever; the coordinator and the plan use the same horizon.
NO_WINDOW_HORIZON = dt.timedelta(days=35)
SECURITY = frozenset({"critical", "high"})


@dataclass(frozen=True)
class Pending:
    """A patch pending on a host (from its last poll, or read from the agent)."""

    name: str
    current_version: str
    available_version: str
    severity: str
    requires_reboot: bool


def assign_batches(
    count: int, *, batch_size: int | None, batch_percent: int | None, canary: bool
) -> list[int]:
    """The batch number of each of ``count`` hosts, in order."""
    if count <= 0:
        return []
    size = count
    if batch_size:
        size = batch_size
    elif batch_percent:
        size = max(1, math.ceil(count * batch_percent / 100))
    if canary and size >= count:
        size = max(1, count // 10) if count > 1 else 1  # a canary of ~10 % by default
        return [0] * size + [1] * (count - size)
    return [index // size for index in range(count)]


def chosen(pending: Iterable[Pending], selection: str, packages: Sequence[str]) -> list[Pending]:
    """The pending patches a patch job of ``selection`` changes on a host: all of them, the
    security ones (critical/high), or those named in ``packages`` (and pending there)."""
    if selection == "security":
        return [p for p in pending if p.severity in SECURITY]
    if selection == "list":
        wanted = set(packages)
        return [p for p in pending if p.name in wanted]
    return list(pending)


def _packages(count: int) -> str:
    return f"{count} package{'s' if count != 1 else ''}"


def drift(planned: Mapping[str, str], now: Iterable[Pending], selection: str) -> str:
    """How the host's pending list now differs from the plan, in one line ("" when it does
    not): planned packages now offered in another version, planned packages no longer
    pending, and (for "all"/"security") packages pending now that the plan did not have."""
    current = {p.name: p for p in now}
    newer = sorted(
        n for n, v in planned.items() if n in current and current[n].available_version != v
    )
    gone = sorted(n for n in planned if n not in current)
    extra = (
        sorted(p.name for p in chosen(current.values(), selection, ()) if p.name not in planned)
        if selection != "list"
        else []
    )
    parts = []
    if newer:
        parts.append(f"{_packages(len(newer))} newer than planned ({', '.join(newer[:5])})")
    if gone:
        parts.append(f"{_packages(len(gone))} no longer pending ({', '.join(gone[:5])})")
    if extra:
        parts.append(f"{_packages(len(extra))} pending that the plan did not have "
                     f"({', '.join(extra[:5])})")  # fmt: skip
    return "; ".join(parts)


# The agent picks its backend by the binaries present and does not report it (agent-api §6);
# the manager infers it from the OS name and version the agent reports.
_FAMILIES = (
    ("apt", ("ubuntu", "debian", "mint", "raspbian", "pop!_os", "kali")),
    ("dnf", ("rocky", "fedora", "alma", "centos stream")),
    ("apk", ("alpine",)),
    ("pacman", ("arch", "manjaro")),
)
# Distributions whose backend changed with a release: yum up to the given major version (RHEL,
# Oracle Linux and CentOS 7; Amazon Linux 2), dnf after it (8+, Amazon Linux 2023).
_BY_VERSION = (("red hat", 7), ("rhel", 7), ("oracle", 7), ("centos", 7), ("amazon", 2))


def _major(os_name: str, os_version: str) -> int | None:
    """The major release number: from ``os_version``, else the first number in the name."""
    for text in (os_version, os_name):
        digits = ""
        for char in text:
            if char.isdigit():
                digits += char
            elif digits:
                break
        if digits:
            return int(digits[:6])
    return None


def package_manager(os_name: str, os_version: str = "") -> str:
    """The agent's backend for an OS name and version ("" when it cannot be told)."""
    lowered = os_name.lower()
    for family, names in _FAMILIES:
        if any(name in lowered for name in names):
            return family
    for name, last_yum in _BY_VERSION:
        if name in lowered:
            major = _major(os_name, os_version)
            if major is None:
                return ""
            return "yum" if major <= last_yum else "dnf"
    return ""


def downgrade_refusal(os_name: str, os_version: str = "") -> str:
    """Why the agent on a host of ``os_name`` (``os_version``) cannot install an older version
    of a package (what a rollback of an upgrade asks), or "" when it can: apt runs
    ``apt-get install -y`` without ``--allow-downgrades`` and refuses; yum's install does not
    downgrade; pacman's install takes no version; Alpine's repositories keep one version of a
    package, so apk has no older version to install. dnf installs the version asked for."""
    family = package_manager(os_name, os_version)
    if family == "apt":
        return ("apt hosts cannot go back to an older version: the agent installs without "
                "--allow-downgrades, so apt refuses")  # fmt: skip
    if family == "yum":
        return "yum hosts cannot go back to an older version: yum install does not downgrade"
    if family == "pacman":
        return "pacman hosts cannot go back to an older version: the agent installs by name only"
    if family == "apk":
        return ("apk hosts cannot go back to an older version: Alpine's repositories keep only "
                "the newest version of a package")  # fmt: skip
    if not os_name:
        return "the host's package manager is not known yet (never polled)"
    if not family:
        shown = f"{os_name} {os_version}".strip()
        return f"the host's package manager cannot be told from its OS ({shown})"
    return ""


def is_downgrade(before: Mapping[str, str] | None, after: Mapping[str, str] | None) -> bool:
    """Whether undoing a job's change (``before`` → ``after`` package versions) needs an older
    version installed over a newer one (not just a removed package put back)."""
    now = after or {}
    return any(name in now and now[name] != version for name, version in (before or {}).items())
