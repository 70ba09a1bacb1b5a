"""Reproducible fleets: hostnames, distributions, installed packages and pending patches.

Pure functions of a seed: the same seed gives the same fleet, so tests and benchmarks are
repeatable. The ``small`` profile (the default: tests, the demo) gives each host its
distribution's minimal installation (families.py), the packages of its role and a few utilities,
with 0 to 12 of them one version behind; ``realistic`` (profiles.py) draws large counts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from .families import BY_ID, DISTRO_WEIGHTS, DISTROS, SELF, Distro, Pkg

# Names whose update needs a reboot (the agent's fixed list, §3.10).
REBOOT_NAMES = ("kernel", "linux-image", "linux-modules", "glibc", "libc6", "systemd", "dbus",
                "openssl", "libssl", "grub", "microcode", "ucode")  # fmt: skip
REBOOT_EXACT = frozenset({"linux", "linux-lts", "linux-generic", "linux-virt", "linux-zen"})
PROFILES = ("small", "realistic")
ROLES = ("web", "db", "app", "cache", "mq", "build", "edge", "mon")


def severity_of(name: str) -> str:
    """The agent's name heuristic: kernel/ssl/security → critical, lib → high, else medium."""
    lowered = name.lower()
    if "kernel" in lowered or "ssl" in lowered or "security" in lowered:
        return "critical"
    if "lib" in lowered:
        return "high"
    return "medium"


def requires_reboot(name: str) -> bool:
    lowered = name.lower()
    return lowered in REBOOT_EXACT or any(marker in lowered for marker in REBOOT_NAMES)


@dataclass
class HostProfile:
    """What one simulated host has installed and what its repositories offer."""

    hostname: str
    family: str  # apt | dnf | apk | pacman
    os: str
    os_version: str
    kernel: str
    installed: dict[str, str]  # name -> version
    upgradable: dict[str, str] = field(default_factory=dict)  # name -> available version
    # Versions this host has had besides the repository's (name -> list, oldest first): what a
    # pinned install may ask for, and the order a downgrade is judged by.
    history: dict[str, list[str]] = field(default_factory=dict)
    uptime_seconds: int = 0
    distro_id: str = ""  # families.BY_ID key; "" for a hand-made profile without repository
    repo: Mapping[str, Pkg] = field(default_factory=dict)  # shared by every host of the distro
    cve_ids: dict[str, list[str]] = field(default_factory=dict)  # realistic profile only

    @property
    def distro(self) -> Distro | None:
        return BY_ID.get(self.distro_id)

    def entry(self, name: str) -> Pkg | None:
        return self.repo.get(name)

    def offered(self, name: str) -> list[str]:
        """Every version of ``name`` the host could install, oldest first."""
        entry = self.repo.get(name)
        versions = list(entry.versions) if entry else []
        for version in self.history.get(name, ()):
            if version not in versions:
                versions.append(version)
        for extra in (self.installed.get(name), self.upgradable.get(name)):
            if extra is not None and extra not in versions:
                versions.append(extra)
        return versions

    def candidate(self, name: str) -> str | None:
        """The version an install without a pin gets (apt's "Candidate")."""
        if name in self.upgradable:
            return self.upgradable[name]
        if name in self.installed:
            return self.installed[name]
        offered = self.offered(name)
        return offered[-1] if offered else None

    def knows(self, name: str) -> bool:
        return name in self.installed or name in self.repo or name in self.history

    def missing_dependencies(self, name: str) -> list[str]:
        """What installing ``name`` pulls in besides it: uninstalled dependencies, depth first."""
        pulled: list[str] = []
        stack = list(reversed(self.repo[name].dependencies)) if name in self.repo else []
        while stack:
            dep = stack.pop()
            if dep in self.installed or dep in pulled or dep == name or dep not in self.repo:
                continue
            pulled.append(dep)
            stack.extend(reversed(self.repo[dep].dependencies))
        return pulled

    def dependents(self, name: str) -> list[str]:
        """Installed packages that depend on ``name``, directly or not, nearest first."""
        found: list[str] = []
        wanted = [name]
        while wanted:
            target = wanted.pop(0)
            for other in sorted(self.installed):
                entry = self.repo.get(other)
                if entry and target in entry.dependencies and other not in (name, *found):
                    found.append(other)
                    wanted.append(other)
        return found


def seeded_rng(index: int, seed: int, profile: str) -> random.Random:
    salt = 0x5EED if profile == "realistic" else 0
    return random.Random(seed * 1_000_003 + index + salt)


def hostname_of(index: int, seed: int, profile: str = "small") -> str:
    """The hostname ``generate_profile`` gives, without generating the package lists."""
    rng = seeded_rng(index, seed, profile)
    rng.choices(DISTROS, DISTRO_WEIGHTS)
    return f"{rng.choice(ROLES)}{index:04d}"


def generate_profile(
    index: int, seed: int, profile: str = "small", *, distro: str | None = None
) -> HostProfile:
    """Host ``index`` of the fleet ``seed``; ``distro`` (a families.BY_ID key) forces its
    distribution (tests)."""
    if profile == "realistic":
        from .profiles import realistic_profile

        return realistic_profile(index, seed, distro=distro)
    if profile != "small":
        raise ValueError(f"unknown simulator profile {profile!r} (known: {', '.join(PROFILES)})")
    rng = seeded_rng(index, seed, profile)
    chosen = rng.choices(DISTROS, DISTRO_WEIGHTS)[0]
    dist = BY_ID[distro] if distro else chosen
    role = rng.choice(ROLES)
    family = dist.family
    repo = dist.catalog
    extras = [*family.roles[role], *rng.sample(family.utilities, rng.randint(0, 4))]
    installed = {name: repo[name].current for name in dist.base_names}
    kernel = install_kernel(dist, installed, behind=rng.random() < 0.35)
    upgradable: dict[str, str] = {}
    host = HostProfile(hostname=f"{role}{index:04d}", family=family.name, os=dist.os,
                       os_version=dist.os_version, kernel=kernel, installed=installed,
                       upgradable=upgradable, distro_id=dist.id, repo=repo,
                       uptime_seconds=rng.randint(3600, 90 * 86400))  # fmt: skip
    for name in extras:
        for pulled in (*host.missing_dependencies(name), name):
            installed.setdefault(pulled, repo[pulled].current)
    fall_behind(host, rng, rng.randint(0, 12))
    return host


def install_kernel(distro: Distro, installed: dict[str, str], *, behind: bool) -> str:
    """The running kernel's packages; a host that is not ``behind`` already updated and
    rebooted (the older build's own packages linger, as they do)."""
    running, newer = distro.kernels
    installed.update(running.packages)
    if behind:
        return running.release
    installed.update(newer.packages)
    return newer.release


def fall_behind(host: HostProfile, rng: random.Random, count: int) -> None:
    """Put ``count`` installed packages one version back: they become pending patches. A host
    still on the older kernel build has its kernel update pending too."""
    distro = host.distro
    assert distro is not None
    running, newer = distro.kernels
    if host.kernel == running.release:
        for name, version in newer.packages.items():
            if name in running.packages and running.packages[name] != version:
                host.upgradable[name] = version
    kernel_names = {*running.packages, *newer.packages, SELF}
    names = sorted(n for n in host.installed
                   if n not in kernel_names and host.repo[n].previous)  # fmt: skip
    for name in rng.sample(names, min(count, len(names))):
        entry = host.repo[name]
        assert entry.previous is not None
        host.installed[name] = entry.previous
        host.upgradable[name] = entry.current
