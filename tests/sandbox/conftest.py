from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from worker.devtools.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=3)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """Raw HTTP to the simulators in-process: no product client in between."""
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle), base_url="http://sandbox") as c:
        yield c
