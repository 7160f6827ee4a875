"""docs/providers.md's outcome table is what the suite gives today."""

from __future__ import annotations

import pytest

from tests.conformance import report


def test_the_committed_table_is_current() -> None:
    doc = report.DOC.read_text(encoding="utf-8")
    fresh = report.splice(doc, report.render(report.run_all()))
    assert fresh == doc, "docs/providers.md is stale: run python -m tests.conformance.report"


def test_only_the_part_between_the_markers_is_rewritten() -> None:
    doc = f"written by hand\n{report.BEGIN}\nold table\n{report.END}\nmore by hand\n"
    new = report.splice(doc, f"{report.BEGIN}\nnew table\n{report.END}")
    assert new == f"written by hand\n{report.BEGIN}\nnew table\n{report.END}\nmore by hand\n"
    with pytest.raises(SystemExit):
        report.splice("no markers here", "table")
