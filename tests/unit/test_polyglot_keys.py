"""Each producer example (Node.js, PHP, Go) computes the contract's idempotency key itself:
its UUIDv5 must equal schemas.keys.idempotency_key, input for input."""

from __future__ import annotations

import pytest

from schemas.keys import idempotency_key
from tests.polyglot import LANGUAGES, Example, example

CASES = [
    ("eguma", "default", "BK-1", 0),
    ("remypass", "venue-2", "A.b_c:d-9", 0),
    ("fourvenues", "acct.x", "x", 12),
    ("fourvenues_channels", "default", "m" * 128, 3),
    ("eguma", "default", "0", 1),
]


@pytest.fixture(scope="module", params=LANGUAGES)
def lang_example(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Example:
    return example(request.param, tmp_path_factory.mktemp(f"keys-{request.param}"))


@pytest.mark.parametrize(("provider", "account", "message_id", "generation"), CASES)
def test_example_key_equals_the_contract_key(
    lang_example: Example, provider: str, account: str, message_id: str, generation: int
) -> None:
    done = lang_example.run(
        "--key-only",
        "--provider",
        provider,
        "--account",
        account,
        "--message-id",
        message_id,
        "--generation",
        str(generation),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == idempotency_key(provider, account, message_id, generation)


def test_a_random_message_id_still_gives_its_own_key(lang_example: Example) -> None:
    # Without --message-id the example picks one; two runs must give two different keys.
    keys = {lang_example.run("--key-only", timeout=30).stdout.strip() for _ in range(2)}
    assert len(keys) == 2 and all(len(k) == 36 for k in keys)
