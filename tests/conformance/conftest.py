from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def _quiet_issue_path() -> Iterator[None]:
    """The issue path logs every call at INFO; capturing thousands of records costs more time
    than the calls themselves. Warnings and errors still show."""
    logging.disable(logging.INFO)
    yield
    logging.disable(logging.NOTSET)
