"""Reproducible fleets: hostnames, distributions, installed packages and pending patches.

Pure functions of a seed: the same seed gives the same fleet, so tests and benchmarks are
repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Distribution families the agent supports (agent-api.md §6; no SUSE).
DISTROS: tuple[tuple[str, str, str, str, str], ...] = (
    # family, os (system/info.os), os_version, kernel, version style
    ("apt", "Ubuntu", "24.04.1 LTS (Noble Numbat)", "6.8.0-45-generic", "deb"),
    ("apt", "Debian GNU/Linux", "12 (bookworm)", "6.1.0-26-amd64", "deb"),
    ("dnf", "Rocky Linux 9.4 (Blue Onyx)", "9.4", "5.14.0-427.13.1.el9_4.x86_64", "rpm"),
    ("dnf", "Fedora Linux 40 (Server Edition)", "40", "6.10.6-200.fc40.x86_64", "rpm"),
    ("apk", "Alpine Linux", "3.20.3", "6.6.52-0-lts", "apk"),
    ("pacman", "Arch Linux", "rolling", "6.10.10-arch1-1", "arch"),
)
DISTRO_WEIGHTS = (40, 20, 20, 8, 7, 5)

BASE_PACKAGES = (
    "bash", "coreutils", "curl", "wget", "openssl", "libssl3", "ca-certificates", "openssh-server",
    "openssh-client", "sudo", "systemd", "dbus", "tzdata", "vim", "nano", "less", "grep", "sed",
    "gawk", "tar", "gzip", "xz-utils", "zlib1g", "libc6", "glibc", "libcurl4", "libxml2",
    "libpcre2", "python3", "perl", "git", "rsync", "cron", "logrotate", "rsyslog", "iproute2",
    "iptables", "nftables", "chrony", "libgnutls30", "libsqlite3", "libzstd", "libexpat1",
    "nginx", "postgresql-client", "jq", "htop", "tmux", "lsof", "strace", "file", "unzip",
    "kernel-core", "linux-image-generic", "intel-microcode", "grub2-common", "security-meta",
    "libkrb5", "libldap", "libnss3", "libseccomp2", "libselinux1", "e2fsprogs", "util-linux",
)  # fmt: skip

# Names whose update needs a reboot (the agent's fixed list, §3.10).
REBOOT_NAMES = ("kernel", "linux-image", "glibc", "libc6", "systemd", "dbus", "openssl",
                "libssl", "grub", "microcode")  # fmt: skip


def severity_of(name: str) -> str:
    """The agent's name heuristic: kernel/ssl/security → critical, lib → high, else medium."""
    lowered = name.lower()
    if "kernel" in lowered or "ssl" in lowered or "security" in lowered:
        return "critical"
    if "lib" in lowered:
        return "high"
    return "medium"


def requires_reboot(name: str) -> bool:
    return any(marker in name.lower() for marker in REBOOT_NAMES)


def _version(rng: random.Random, style: str) -> tuple[str, str]:
    major, minor, patch = rng.randint(1, 9), rng.randint(0, 30), rng.randint(0, 20)
    rel = rng.randint(1, 9)
    if style == "deb":
        old = f"{major}.{minor}.{patch}-{rel}ubuntu0.{rng.randint(1, 5)}"
        new = f"{major}.{minor}.{patch}-{rel}ubuntu0.{rng.randint(6, 9)}"
    elif style == "rpm":
        old = f"{major}.{minor}.{patch}-{rel}.el9"
        new = f"{major}.{minor}.{patch}-{rel + 1}.el9"
    elif style == "apk":
        old = f"{major}.{minor}.{patch}-r{rel}"
        new = f"{major}.{minor}.{patch}-r{rel + 1}"
    else:
        old = f"{major}.{minor}.{patch}-{rel}"
        new = f"{major}.{minor}.{patch + 1}-1"
    return old, new


@dataclass
class HostProfile:
    """What one simulated host looks like when it starts."""

    hostname: str
    family: str
    os: str
    os_version: str
    kernel: str
    installed: dict[str, str]  # name -> version
    upgradable: dict[str, str] = field(default_factory=dict)  # name -> available version
    # Versions the repository still offers for downgrades (name -> list), for rollbacks.
    history: dict[str, list[str]] = field(default_factory=dict)
    uptime_seconds: int = 0


def generate_profile(index: int, seed: int) -> HostProfile:
    rng = random.Random(seed * 1_000_003 + index)
    family, os_name, os_version, kernel, style = rng.choices(DISTROS, DISTRO_WEIGHTS)[0]
    role = rng.choice(("web", "db", "app", "cache", "mq", "build", "edge", "mon"))
    hostname = f"{role}{index:04d}"
    names = rng.sample(BASE_PACKAGES, rng.randint(30, len(BASE_PACKAGES)))
    installed: dict[str, str] = {}
    upgradable: dict[str, str] = {}
    history: dict[str, list[str]] = {}
    pending = rng.randint(0, 12)
    for position, name in enumerate(sorted(names)):
        old, new = _version(rng, style)
        installed[name] = old
        history[name] = [old]
        if position < pending or (pending and rng.random() < 0.05):
            upgradable[name] = new
    return HostProfile(
        hostname=hostname,
        family=family,
        os=os_name,
        os_version=os_version,
        kernel=kernel,
        installed=installed,
        upgradable=upgradable,
        history=history,
        uptime_seconds=rng.randint(3600, 90 * 86400),
    )
