"""Who may import whom (STYLE.md): checked on the source, so a violation fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = {
    "actors",
    "web",
    "storage",
    "ca",
    "reports",
    "settings",
    "patch_manager",
    "simulator",
    "maintenance",
}
ALLOWED = {
    "settings": set(),
    "maintenance": set(),
    "storage": set(),
    "ca": set(),
    "reports": {"storage"},
    "actors": {"storage", "ca", "settings", "maintenance"},
    "web": {"storage", "reports", "settings", "ca", "maintenance"},
    # The simulator is the agent's double: it shares nothing with the client it tests.
    "simulator": {"ca"},
    "patch_manager": OURS,
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_packages_import_only_what_they_may() -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for other in imported_packages(path) - allowed - {package}:
                violations.append(f"{path.relative_to(REPO)} imports {other}")
    assert violations == []


def test_templates_and_conf_hold_no_python() -> None:
    assert not list((REPO / "templates").rglob("*.py"))
    assert not list((REPO / "conf").rglob("*.py"))
