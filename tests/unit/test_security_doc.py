"""docs/security.md names the test behind each control: every file::test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# `tests/x.py::test_a` names a file and a test; a following `::test_b` is in the same file.
REFERENCE = re.compile(r"(tests/[\w/]+\.py)?::(test_\w+)")


def test_every_test_the_security_doc_names_exists() -> None:
    text = DOC.read_text()
    current: Path | None = None
    named = 0
    for match in REFERENCE.finditer(text):
        if match.group(1):
            current = ROOT / match.group(1)
        assert current is not None, f"::{match.group(2)} without a file before it"
        assert current.is_file(), f"docs/security.md names a missing file {current}"
        assert re.search(rf"^def {match.group(2)}\(", current.read_text(), re.M), (
            f"docs/security.md names {current.relative_to(ROOT)}::{match.group(2)}, which does not exist"
        )
        named += 1
    assert named >= 40
