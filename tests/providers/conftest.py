from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from provider_helpers import ACCOUNTS

from worker.devtools.sandbox import Sandbox
from worker.providers import PROVIDERS, build_client


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=1)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with build_client(ACCOUNTS[("remypass", "default")], transport=httpx.MockTransport(sandbox.handle)) as c:
        yield c


@pytest.fixture(autouse=True)
def _adapters_start_afresh() -> Iterator[None]:
    """Adapters learn from answers (lookup path, whether sent codes are kept): each test
    starts without that knowledge."""
    for adapter in PROVIDERS.values():
        adapter.forget()
    yield
    for adapter in PROVIDERS.values():
        adapter.forget()
