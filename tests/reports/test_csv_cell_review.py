"""CSV cells a spreadsheet would evaluate are defused even behind leading blanks (review F13a
L6): the audit export and the report CSVs share ``reports.csv_out.cell``."""

from __future__ import annotations

import pytest

from reports.csv_out import cell


@pytest.mark.parametrize("text", ["\n=1+1", " =1+1", "|cmd", "  @SUM(A1)", "\r\n+1", "=1"])
def test_formulas_behind_blanks_and_pipes_are_prefixed(text: str) -> None:
    assert cell(text) == "'" + text


@pytest.mark.parametrize("text", ["plain", "a=b", "", "   ", "host-1"])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert cell(text) == text
