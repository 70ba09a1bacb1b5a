"""The apt parsing cross-check (agent-api.md §3.10), a pure function.

Agents of the 2.x line split apt's ``pkg/suite NEW arch [upgradable from: OLD]`` on whitespace
and report ``current_version = NEW`` and ``available_version = <arch>`` (e.g. ``"amd64"``).
Such a patch is recognised by an architecture in ``available_version`` and corrected from the
installed packages polled in the same cycle (``GET /packages``): the available version is the
reported "current" one, the current version is the installed one (empty when unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .agent_records import Package, Patch, PatchList

ARCHITECTURES = frozenset(
    {
        "all", "amd64", "arm64", "armel", "armhf", "i386", "mips64el", "ppc64el", "riscv64",
        "s390x", "x86_64", "aarch64", "i686", "noarch", "ppc64le",
    }
)  # fmt: skip


def misparsed(patch: Patch) -> bool:
    """Does this patch carry the §3.10 bug (an architecture where a version belongs)?"""
    return patch.available_version.strip().lower() in ARCHITECTURES


def cross_check(patches: PatchList, installed: Sequence[Package]) -> PatchList:
    """``patches`` with every misparsed entry corrected (the others untouched)."""
    if not any(misparsed(p) for p in patches.patches):
        return patches
    versions = {p.name: p.version for p in installed}
    fixed = tuple(
        replace(p, current_version=versions.get(p.name, ""), available_version=p.current_version)
        if misparsed(p)
        else p
        for p in patches.patches
    )
    return replace(patches, patches=fixed)
