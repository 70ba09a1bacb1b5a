"""The agent's rules for package names and versions (agent-api.md §2.3), as pure functions.

They live here, in the leaf every layer may import, so that the web layer refuses a bad name at
input with exactly the rule the agent client enforces before sending (``actors`` may import
``storage``; ``web`` may not import ``actors``). No SQL, no I/O.
"""

from __future__ import annotations

import re

PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,255}")
PACKAGE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.:~_-]{0,255}")


def package_name_problem(name: str) -> str | None:
    """Why the agent would refuse ``name`` as a package name, or None when it is fine."""
    if PACKAGE_NAME.fullmatch(name):
        return None
    return (
        f"{name[:60]!r} is not a package name: 1 to 256 of letters, digits, '+', '.', '_' or"
        " '-', starting with a letter or digit"
    )


def package_version_problem(version: str) -> str | None:
    """Why the agent would refuse ``version`` as a package version, or None when it is fine."""
    if PACKAGE_VERSION.fullmatch(version):
        return None
    return (
        f"{version[:60]!r} is not a package version: 1 to 256 of letters, digits, '+', '.',"
        " ':', '~', '_' or '-', starting with a letter or digit"
    )
