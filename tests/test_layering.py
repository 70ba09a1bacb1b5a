"""What import-linter cannot see. Who may import whom (STYLE.md) is checked by the contracts in
pyproject.toml ([tool.importlinter]), which .ci/run runs with `lint-imports`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_templates_and_conf_hold_no_python() -> None:
    assert not list((REPO / "templates").rglob("*.py"))
    assert not list((REPO / "conf").rglob("*.py"))


# A string that starts an SQL statement: upper-case keyword, then SQL-shaped text.
SQL_STATEMENT = re.compile(
    r"\s*(SELECT\s+\S|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s"
    r"|WITH\s+\w+(\s*\([^)]*\))?\s+AS\s*\("
    r"|CREATE\s+(TABLE|INDEX|UNIQUE|VIEW|TYPE|FUNCTION|TRIGGER|EXTENSION|SCHEMA)\b"
    r"|ALTER\s+(TABLE|INDEX|TYPE)\s|DROP\s+(TABLE|INDEX|VIEW|TYPE|FUNCTION|TRIGGER|SCHEMA)\s)"
)
# storage/ is where SQL lives; tests and benchmarks seed databases with it on purpose.
SQL_ALLOWED = {"storage", "tests", "benchmarks"}


def sql_literals(source: str) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and SQL_STATEMENT.match(node.value)
    ]


def test_the_sql_detector_sees_statements_and_not_prose() -> None:
    caught = sql_literals(
        'A = ("SELECT h.id FROM hosts h")\n'
        'B = "UPDATE jobs SET status = %s WHERE id = %s"\n'
        "C = \"SELECT pg_notify('host_refresh', %s)\"\n"
        'D = "WITH picked AS (SELECT 1) DELETE FROM x"\n'
        'E = "Select a host"\n'
        'F = "UPDATE the agent first"\n'
    )
    assert [line for line, _ in caught] == [1, 2, 3, 4]


def test_no_sql_statement_outside_storage() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {text[:50]}"
        for path in sorted(REPO.rglob("*.py"))
        if path.relative_to(REPO).parts[0] not in SQL_ALLOWED
        and not any(part.startswith(".") or part.endswith(".egg-info") for part in path.parts)
        for line, text in sql_literals(path.read_text())
    ]
    assert found == []
