"""End to end, for every provider: XADD on the intake stream -> intake -> Celery worker (real
processes) -> sandbox over HTTP -> row in SQL and result on the results stream."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.keys import idempotency_key
from tests.e2e.harness import System, clean_faults, codes_kept, creations_of_codes, running_system, wait_for
from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME, envelope

pytestmark = pytest.mark.slow
PROVIDERS = ["remypass", "fourvenues", "fourvenues_channels", "eguma"]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[System]:
    yield from running_system(tmp_path_factory, redis_server_url, "e2e")


@pytest.fixture(autouse=True)
def _clean_faults(system: System) -> Iterator[None]:
    codes_kept(system)  # recovery needs a reading under which a lost answer can be settled
    yield from clean_faults(system)


def creation_counts(system: System, env: dict[str, Any], result: dict[str, Any]) -> list[int]:
    """How many times the provider created what this booking asked for (per identity)."""
    provider = env["provider"]
    truth = system.sandbox.ground_truth()[provider]["creations"]
    if provider == "remypass":
        return [truth.get(env["payload"]["bookingId"], 0)]
    if provider == "eguma":
        return [truth.get(result["idempotency_key"], 0)]
    return creations_of_codes(system, provider, [t["code"] for t in result["tickets"]])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_issued_end_to_end_and_three_deliveries_make_one_creation(system: System, provider: str) -> None:
    mid = f"e2e-{provider}-dup"
    env = envelope(provider, mid, metadata={"order": "A-17"})
    for _ in range(3):
        system.publish(env)
    result = system.wait_result(mid)
    assert result["status"] == "issued", result
    assert result["idempotency_key"] == idempotency_key(provider, "default", mid)
    assert result["metadata"] == {"order": "A-17"} and result["error"] is None
    assert result["tickets"] and all(t["code"] for t in result["tickets"])
    expected = len(env["payload"].get("tickets", [])) or 1
    if provider in ("fourvenues", "fourvenues_channels"):
        assert len(result["tickets"]) == expected
    # Once final, the same message again gets the same result published again, and no call.
    system.publish(env)
    wait_for(lambda: len(system.results_for(mid)) >= 2, 20, "the republished result")
    assert creation_counts(system, env, result) == [1] * len(creation_counts(system, env, result))
    rows = system.rows_for(mid)
    assert len(rows) == 1 and rows[0].status == "issued" and rows[0].attempts == 1
    assert rows[0].callback_sent_at is not None
    assert {r["status"] for r in system.results_for(mid)} == {"issued"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_error_then_success(system: System, provider: str) -> None:
    system.sandbox.set_faults(provider, fail_next=[{"status": 500}])
    mid = f"e2e-{provider}-5xx"
    env = envelope(provider, mid)
    system.publish(env)
    result = system.wait_result(mid)
    assert result["status"] == "issued", result
    assert result["attempts"] == 2
    counts = creation_counts(system, env, result)
    assert counts and set(counts) == {1}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_permanent_refusal_fails_clearly_without_retry(system: System, provider: str) -> None:
    system.sandbox.set_faults(provider, fail_next=[{"status": 400}])
    mid = f"e2e-{provider}-400"
    system.publish(envelope(provider, mid))
    result = system.wait_result(mid)
    assert result["status"] == "failed", result
    assert result["attempts"] == 1 and result["tickets"] == []
    assert result["error"]["http_status"] == 400 and result["error"]["retryable"] is False
    assert result["error"]["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_honoured(system: System, provider: str) -> None:
    system.sandbox.set_faults(provider, fail_next=[{"status": 429, "retry_after": 2}])
    mid = f"e2e-{provider}-429"
    system.publish(envelope(provider, mid))
    result = system.wait_result(mid)
    assert result["status"] == "issued" and result["attempts"] == 2, result
    row = system.rows_for(mid)[0]
    assert row.completed_at is not None
    waited = (row.completed_at - row.created_at).total_seconds()
    assert waited >= 2.0, f"second attempt came {waited:.2f}s after the first, before Retry-After"


def test_malformed_input_is_dead_lettered_and_the_next_message_is_issued(system: System) -> None:
    bad = envelope("eguma", "e2e-bad")
    bad["payload"]["items"] = [{"category_id": "c", "quantity": "two"}]
    system.publish("{definitely not json")
    system.publish(bad)
    system.publish(envelope("eguma", "e2e-after-bad"))
    rejected = system.wait_result("e2e-bad")
    assert rejected["status"] == "rejected" and rejected["error"]["type"] == "invalid_payload"
    assert "payload.items.0.quantity" in rejected["error"]["message"]
    assert system.wait_result("e2e-after-bad")["status"] == "issued"
    reasons = [d[b"dead_reason"].decode() for d in system.dead_letters()]
    assert any(r.startswith("invalid_json") for r in reasons)
    assert any(r.startswith("invalid_payload") for r in reasons)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_worker_killed_mid_call_still_issues_exactly_once(system: System, provider: str) -> None:
    """SIGKILL the whole worker while the provider is answering: the provider creates the
    tickets but nobody hears it. A new worker takes over after the lease and the same key
    finds the tickets (replay, duplicate answer or lookup) instead of creating them again."""
    system.sandbox.set_faults(provider, latency_ms=2500)
    mid = f"e2e-{provider}-kill"
    env = envelope(provider, mid)
    key = idempotency_key(provider, "default", mid)
    system.publish(env)
    wait_for(
        lambda: system.rows_for(mid) and system.rows_for(mid)[0].status == "in_progress",
        30,
        "the call to start",
    )
    system.kill("worker", signal.SIGKILL)
    # Let the in-flight request complete at the provider with nobody listening.
    time.sleep(3)
    system.sandbox.set_faults(provider)
    system.restart("worker")
    result = system.wait_result(mid, timeout=90)
    assert result["status"] == "issued", result
    assert result["attempts"] >= 2
    counts = creation_counts(system, env, result)
    assert counts and set(counts) == {1}, counts
    assert system.row(key).status == "issued"


def test_redis_restarting_empty_loses_no_accepted_booking(system: System) -> None:
    """Bookings accepted (rows in SQL, tasks in Redis), then Redis loses everything: the sweeper
    re-drives every row from SQL and each is issued once."""
    system.kill("worker", signal.SIGTERM)
    envs = [envelope(p, f"e2e-{p}-wiped-{i}") for p in PROVIDERS for i in range(2)]
    for env in envs:
        system.publish(env)
    wait_for(lambda: all(system.rows_for(e["message_id"]) for e in envs), 30, "intake to accept all")
    # The tasks wait in Redis (beside sweep tasks, and re-drives of rows already stale),
    # carrying the key and nothing else.
    keys = set()
    for raw in system.redis.lrange("ticketrelay", 0, -1):
        message = json.loads(raw)
        assert CUSTOMER_EMAIL not in raw.decode() and CUSTOMER_NAME not in raw.decode()
        task = message["headers"]["task"]
        if task in ("ticketrelay.issue", "ticketrelay.issue_batch"):
            args = json.loads(base64.b64decode(message["body"]))[0]
            assert len(args) == 1 and message["headers"]["argsrepr"] == repr((args[0],))
            # One key, or a batch of keys that intake read together: keys only, either way.
            batch = args[0] if task == "ticketrelay.issue_batch" else [args[0]]
            assert all(isinstance(k, str) and len(k) == 36 for k in batch)
            keys.update(batch)
    assert keys == {system.rows_for(e["message_id"])[0].idempotency_key for e in envs}
    system.redis.flushdb()  # ... and are gone, with the stream, the group and the results
    system.restart("worker")
    for env in envs:
        result = system.wait_result(env["message_id"], timeout=60)
        assert result["status"] == "issued", result
        assert set(creation_counts(system, env, result)) == {1}
        assert len(system.rows_for(env["message_id"])) == 1
    # Intake is still consuming after the group vanished with the data.
    system.publish(envelope("eguma", "e2e-after-wipe"))
    assert system.wait_result("e2e-after-wipe")["status"] == "issued"


def test_no_personal_data_or_secret_in_any_process_output(system: System) -> None:
    """Runs last in this module: everything the processes printed during all the tests above."""
    from worker.settings import SANDBOX_API_KEY

    logs = system.logs()
    assert "ticketrelay.issue" in logs and "provider_call" in logs  # the logs are really there
    for needle in (CUSTOMER_EMAIL, CUSTOMER_NAME, SANDBOX_API_KEY, "apikey="):
        assert needle not in logs, needle
