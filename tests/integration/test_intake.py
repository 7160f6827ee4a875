"""Intake against a real Redis and a real SQLite file: at-least-once consumption, dedup,
dead letters and rejected results."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from schemas.keys import idempotency_key
from tests.helpers import CUSTOMER_EMAIL, envelope, wait_until
from worker import ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.settings import Settings, sandbox_accounts


def make_intake(client: redis.Redis, settings: Settings, consumer: str = "c1") -> tuple[Intake, list[str]]:
    enqueued: list[str] = []
    s = settings.model_copy(update={"consumer_name": consumer})
    intake = Intake(
        client, make_engine(s.database_url), s, sandbox_accounts("http://sandbox"), enqueued.append
    )
    intake.ensure_group()
    return intake, enqueued


def xadd(client: redis.Redis, env: dict[str, Any] | str) -> None:
    client.xadd("ticketrelay:bookings", {"message": env if isinstance(env, str) else json.dumps(env)})


def results(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(f[b"result"]) for _i, f in client.xrange("ticketrelay:results")]


def dead(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _i, f in client.xrange("ticketrelay:dead")]


def rows(intake: Intake) -> int:
    with intake.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger.T)).scalar_one())


def drain(intake: Intake) -> None:
    while intake.run_once():
        pass


def test_valid_message_becomes_a_row_and_a_key_only_task(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    xadd(redis_client, envelope("eguma", "m-1"))
    drain(intake)
    key = idempotency_key("eguma", "default", "m-1")
    assert enqueued == [key]
    row = ledger.get(intake.engine, key)
    assert row is not None and row.status == "queued" and row.payload is not None
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 0


def test_duplicate_message_makes_no_second_row_and_republishes_a_final_result(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    env = envelope("remypass", "m-dup")
    for _ in range(3):
        xadd(redis_client, env)
    drain(intake)
    key = idempotency_key("remypass", "default", "m-dup")
    assert rows(intake) == 1
    # Queued duplicates are enqueued again (a crash may have eaten the first task); the claim
    # lets only one of them reach the provider.
    assert set(enqueued) == {key}
    ledger.record_final_error(
        intake.engine,
        key,
        None,
        ledger.Status.FAILED,
        ledger.ResultError(type="validation_error", message="x"),
        False,
    )
    xadd(redis_client, env)
    drain(intake)
    assert rows(intake) == 1
    out = results(redis_client)
    assert [r["status"] for r in out] == ["failed"] and out[0]["idempotency_key"] == key


def test_same_message_id_with_another_payload_is_refused_and_changes_nothing(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    first = envelope("eguma", "m-x")
    xadd(redis_client, first)
    second = envelope("eguma", "m-x")
    second["payload"]["items"][0]["quantity"] = 5
    xadd(redis_client, second)
    drain(intake)
    assert rows(intake) == 1 and len(enqueued) == 1
    row = ledger.get(intake.engine, idempotency_key("eguma", "default", "m-x"))
    assert row is not None and row.payload == first["payload"]
    d = dead(redis_client)
    assert len(d) == 1 and b"different payload" in d[0][b"dead_reason"]
    assert json.loads(d[0][b"message"]) == second  # kept untouched
    assert results(redis_client) == []  # nothing that could contradict the first message


def test_malformed_entries_are_dead_lettered_with_rejected_results_and_the_next_is_accepted(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    xadd(redis_client, "this is not json")
    redis_client.xadd("ticketrelay:bookings", {b"wrong": b"\xff\xfe"})
    bad = envelope("eguma", "m-bad")
    bad["payload"]["items"] = []
    xadd(redis_client, bad)
    unknown = envelope("eguma", "m-unknown")
    unknown["provider"] = "ticketmaster"
    xadd(redis_client, unknown)
    xadd(redis_client, envelope("fourvenues", "m-good"))
    drain(intake)
    reasons = [d[b"dead_reason"].decode() for d in dead(redis_client)]
    assert len(reasons) == 4
    assert reasons[0].startswith("invalid_json") and reasons[1].startswith("invalid_message")
    assert reasons[2].startswith("invalid_payload") and reasons[3].startswith("unknown_provider")
    assert all(CUSTOMER_EMAIL not in r for r in reasons)
    out = {r["message_id"]: r for r in results(redis_client)}
    assert set(out) == {"m-bad", "m-unknown"}
    assert out["m-bad"]["status"] == "rejected" and out["m-bad"]["error"]["type"] == "invalid_payload"
    assert out["m-bad"]["attempts"] == 0 and out["m-bad"]["tickets"] == []
    assert enqueued == [idempotency_key("fourvenues", "default", "m-good")]
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 0


def test_reply_to_routes_the_result(redis_client: redis.Redis, settings: Settings) -> None:
    intake, _ = make_intake(redis_client, settings)
    env = envelope("eguma", "m-r", reply_to="ticketrelay:results:boxoffice-7")
    env["payload"]["items"] = []
    xadd(redis_client, env)
    drain(intake)
    assert redis_client.xlen("ticketrelay:results:boxoffice-7") == 1
    assert redis_client.xlen("ticketrelay:results") == 0


def test_entries_of_a_crashed_consumer_are_reclaimed(redis_client: redis.Redis, settings: Settings) -> None:
    s = settings.model_copy(update={"intake_reclaim_idle_ms": 100})
    make_intake(redis_client, s, consumer="crashed")
    xadd(redis_client, envelope("eguma", "m-orphan"))
    # The crashed consumer read the entry and died before acknowledging it.
    got = redis_client.xreadgroup(s.intake_group, "crashed", {"ticketrelay:bookings": ">"}, count=10)
    assert got and redis_client.xpending("ticketrelay:bookings", s.intake_group)["pending"] == 1
    rescuer, enqueued = make_intake(redis_client, s, consumer="rescuer")
    rescuer._last_reclaim = 0
    import time

    time.sleep(0.2)
    drain(rescuer)
    assert enqueued == [idempotency_key("eguma", "default", "m-orphan")]
    assert redis_client.xpending("ticketrelay:bookings", s.intake_group)["pending"] == 0


def test_run_loop_survives_a_redis_that_restarted_empty(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    stop = threading.Event()
    t = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    t.start()
    try:
        xadd(redis_client, envelope("eguma", "m-a"))
        wait_until(lambda: len(enqueued) == 1)
        redis_client.flushdb()  # what a restart without persistence leaves: no stream, no group
        xadd(redis_client, envelope("eguma", "m-b"))
        wait_until(lambda: len(enqueued) == 2)
    finally:
        stop.set()
        t.join(5)
    assert enqueued[1] == idempotency_key("eguma", "default", "m-b")


def test_an_entry_that_breaks_even_the_dead_letter_is_acknowledged_not_looped(
    redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    xadd(redis_client, envelope("eguma", "m-poison"))
    xadd(redis_client, envelope("eguma", "m-next"))

    def broken_validate(fields: dict[Any, Any]) -> Any:
        if b"m-poison" in fields[b"message"]:
            raise RuntimeError("a bug")
        return original(fields)

    def broken_dead_letter(*_a: Any, **_k: Any) -> None:
        raise ValueError("another bug")

    original = intake._validate
    monkeypatch.setattr(intake, "_validate", broken_validate)
    monkeypatch.setattr("worker.intake.dead_letter", broken_dead_letter)
    drain(intake)
    assert enqueued == [idempotency_key("eguma", "default", "m-next")]
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 0


def test_one_read_becomes_one_transaction_and_one_batched_enqueue(
    redis_client: redis.Redis, settings: Settings
) -> None:
    batches: list[list[str]] = []
    s = settings.model_copy(update={"consumer_name": "batcher"})
    intake = Intake(
        redis_client,
        make_engine(s.database_url),
        s,
        sandbox_accounts("http://sandbox"),
        lambda _key: pytest.fail("a batch of new keys must go through enqueue_many"),
        batches.append,
    )
    intake.ensure_group()
    for i in range(5):
        xadd(redis_client, envelope("eguma", f"m-b{i}"))
    assert intake.run_once() == 5
    assert batches == [[idempotency_key("eguma", "default", f"m-b{i}") for i in range(5)]]
    assert rows(intake) == 5
    assert redis_client.xpending("ticketrelay:bookings", s.intake_group)["pending"] == 0


def test_the_same_message_id_twice_in_one_read(redis_client: redis.Redis, settings: Settings) -> None:
    intake, enqueued = make_intake(redis_client, settings)
    first = envelope("eguma", "m-twice")
    changed = envelope("eguma", "m-twice")
    changed["payload"]["items"][0]["quantity"] = 3
    xadd(redis_client, first)
    xadd(redis_client, first)  # a plain resend: one row, one task
    xadd(redis_client, changed)  # same message_id, different payload: a conflict
    assert intake.run_once() == 3
    assert enqueued == [idempotency_key("eguma", "default", "m-twice")]
    assert rows(intake) == 1
    reasons = [f[b"dead_reason"].decode() for f in dead(redis_client)]
    assert len(reasons) == 1 and reasons[0].startswith("duplicate_message_id")


def test_a_database_outage_leaves_the_whole_read_pending(
    redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    intake, enqueued = make_intake(redis_client, settings)
    for i in range(3):
        xadd(redis_client, envelope("eguma", f"m-o{i}"))

    def down(*_a: Any, **_k: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is gone"))

    monkeypatch.setattr(ledger, "create_queued_many", down)
    with pytest.raises(OperationalError):
        intake.run_once()
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 3
    monkeypatch.undo()
    drain(intake)  # the same entries, read again from this consumer's pending list
    assert sorted(enqueued) == sorted(idempotency_key("eguma", "default", f"m-o{i}") for i in range(3))
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 0
