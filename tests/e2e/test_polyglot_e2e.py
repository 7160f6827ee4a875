"""The producer examples in Node.js, PHP and Go against a live ticketrelay (real Redis, intake,
Celery worker, the sandbox over HTTP): each publishes a booking, computes its own key and reads
its result; ticketrelay's side (the SQL row, the result stream, the provider) must agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.keys import idempotency_key
from tests.e2e.harness import System, clean_faults, codes_kept, creations_of_codes, running_system
from tests.polyglot import LANGUAGES, Example, example, printed

pytestmark = pytest.mark.slow
PROVIDERS = ["eguma", "remypass", "fourvenues", "fourvenues_channels"]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[System]:
    yield from running_system(tmp_path_factory, redis_server_url, "polyglot")


@pytest.fixture(autouse=True)
def _clean_faults(system: System) -> Iterator[None]:
    codes_kept(system)  # recovery needs a reading under which a lost answer can be settled
    yield from clean_faults(system)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("polyglot-build")


@pytest.fixture(scope="module", params=LANGUAGES)
def lang_example(request: pytest.FixtureRequest, build_dir: Path) -> Example:
    return example(request.param, build_dir)


def run_example(system: System, ex: Example, *args: str) -> tuple[int, dict[str, str], str]:
    done = ex.run(*args, "--timeout", "60", env={"REDIS_URL": system.redis_url})
    return done.returncode, printed(done.stdout), f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def created_once(system: System, provider: str, key: str, mid: str, result: dict[str, Any]) -> bool:
    """The provider created this booking exactly once (its own ground truth, per identity)."""
    truth = system.sandbox.ground_truth()[provider]["creations"]
    if provider == "eguma":  # e-guma dedups on the Idempotency-Key header: our key
        return bool(truth.get(key) == 1)
    if provider == "remypass":
        return bool(truth.get(f"BK-{mid}") == 1)
    codes = [t["code"] for t in result["tickets"]]
    return bool(codes) and all(n == 1 for n in creations_of_codes(system, provider, codes))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_example_books_and_reads_its_own_result(system: System, lang_example: Example, provider: str) -> None:
    rc, out, log = run_example(system, lang_example, "--provider", provider)
    assert rc == 0, log
    mid, key, reply_to = out["message_id"], out["idempotency_key"], out["reply_to"]
    # The key the example computed is the contract's key, and the one ticketrelay used.
    assert key == idempotency_key(provider, "default", mid), log
    row = system.row(key)
    assert (row.message_id, row.provider, row.status, row.attempts) == (mid, provider, "issued", 1)
    assert row.reply_to == reply_to and reply_to.startswith("ticketrelay:results:")
    results = [r for r in system.results(reply_to) if r["message_id"] == mid]
    assert results and {r["idempotency_key"] for r in results} == {key}
    assert {r["status"] for r in results} == {"issued"}
    assert results[0]["metadata"] == {"example": lang_example.language}
    assert json.loads(out["result"]) in results, "the example printed a result ticketrelay did not send"
    assert created_once(system, provider, key, mid, results[0])


def test_example_exits_non_zero_when_the_booking_is_not_issued(system: System, lang_example: Example) -> None:
    system.sandbox.set_faults("eguma", fail_next=[{"status": 400}])
    mid = f"polyglot-{lang_example.language}-refused"
    rc, out, log = run_example(system, lang_example, "--message-id", mid)
    assert rc == 1, log
    assert out["message_id"] == mid and out["idempotency_key"] == idempotency_key("eguma", "default", mid)
    printed_result = json.loads(out["result"])
    assert printed_result["status"] == "failed" and printed_result["error"]["http_status"] == 400
    assert system.row(out["idempotency_key"]).status == "failed"
