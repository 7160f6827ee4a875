from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.providers import PROVIDERS


@pytest.fixture(autouse=True)
def _adapters_start_afresh() -> Iterator[None]:
    """Adapters learn from answers (which lookup path works, whether sent codes are kept);
    every test starts without that knowledge, whatever ran before it."""
    for adapter in PROVIDERS.values():
        adapter.forget()
    yield
    for adapter in PROVIDERS.values():
        adapter.forget()
