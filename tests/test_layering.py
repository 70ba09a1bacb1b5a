"""What import-linter cannot see. Who may import whom (STYLE.md) is checked by the contracts in
pyproject.toml ([tool.importlinter]), which .ci/run runs with `lint-imports`."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_templates_and_conf_hold_no_python() -> None:
    assert not list((REPO / "templates").rglob("*.py"))
    assert not list((REPO / "conf").rglob("*.py"))
