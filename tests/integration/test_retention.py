"""Stream retention against a real Redis: the bookings stream loses only what every consumer
group has acknowledged, the results and dead streams stay near their caps, and the intake run
loop does the trimming."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from schemas.statuses import Status
from tests.helpers import accept_booking, envelope, wait_until
from worker import issuing, ledger, retention
from worker.db import make_engine
from worker.intake import Intake
from worker.issuing import ClientCache, Deps
from worker.results import dead_letter, publish_result, publish_results, result_from_row
from worker.settings import Settings, sandbox_accounts

STREAM = "ticketrelay:bookings"


def add(client: redis.Redis, *ids: str) -> None:
    for entry_id in ids:
        client.xadd(STREAM, {"message": f"entry {entry_id}"}, id=entry_id)


def ids_left(client: redis.Redis, stream: str = STREAM) -> list[str]:
    return [i.decode() for i, _f in client.xrange(stream)]


def read(client: redis.Redis, group: str, count: int, consumer: str = "c") -> list[str]:
    resp = client.xreadgroup(group, consumer, {STREAM: ">"}, count=count)
    return [i.decode() for _s, items in resp for i, _f in items]


# --- trim_processed ---------------------------------------------------------------------------


def test_acked_entries_go_while_pending_and_undelivered_ones_stay(redis_client: redis.Redis) -> None:
    add(redis_client, "1-1", "2-1", "3-1", "4-1", "5-1", "6-1")
    redis_client.xgroup_create(STREAM, "g", id="0")
    assert read(redis_client, "g", 4) == ["1-1", "2-1", "3-1", "4-1"]
    redis_client.xack(STREAM, "g", "1-1", "2-1", "4-1")  # 3-1 stays pending, 5-1 and 6-1 unread

    assert retention.trim_processed(redis_client, STREAM) == 2
    # 3-1: the oldest pending entry itself is kept (XTRIM MINID keeps ids >= the floor).
    assert ids_left(redis_client) == ["3-1", "4-1", "5-1", "6-1"]
    assert retention.trim_processed(redis_client, STREAM) == 0  # nothing more is safe

    redis_client.xack(STREAM, "g", "3-1")
    assert retention.trim_processed(redis_client, STREAM) == 1
    # The last delivered entry is the floor when nothing is pending; unread ones are untouched.
    assert ids_left(redis_client) == ["4-1", "5-1", "6-1"]


def test_a_pending_entry_taken_over_by_another_consumer_is_still_protected(
    redis_client: redis.Redis,
) -> None:
    add(redis_client, "1-1", "2-1", "3-1")
    redis_client.xgroup_create(STREAM, "g", id="0")
    read(redis_client, "g", 3, consumer="dead-one")
    redis_client.xack(STREAM, "g", "1-1", "3-1")
    redis_client.xclaim(STREAM, "g", "rescuer", 0, ["2-1"])
    assert retention.trim_processed(redis_client, STREAM) == 1
    assert ids_left(redis_client) == ["2-1", "3-1"]


def test_the_slower_group_protects_entries(redis_client: redis.Redis) -> None:
    add(redis_client, "1-1", "2-1", "3-1", "4-1", "5-1")
    redis_client.xgroup_create(STREAM, "fast", id="0")
    redis_client.xgroup_create(STREAM, "slow", id="0")
    redis_client.xack(STREAM, "fast", *read(redis_client, "fast", 5))

    assert retention.trim_processed(redis_client, STREAM) == 0  # slow has read nothing yet
    assert ids_left(redis_client) == ["1-1", "2-1", "3-1", "4-1", "5-1"]

    redis_client.xack(STREAM, "slow", *read(redis_client, "slow", 2))
    assert retention.trim_processed(redis_client, STREAM) == 1
    assert ids_left(redis_client) == ["2-1", "3-1", "4-1", "5-1"]

    # The fast group's pending entry, below the slow group's position, is what counts now.
    add(redis_client, "6-1")
    redis_client.xack(STREAM, "slow", *read(redis_client, "slow", 10))
    redis_client.xgroup_setid(STREAM, "fast", "2-1")  # an operator replays from 3-1
    assert read(redis_client, "fast", 3) == ["3-1", "4-1", "5-1"]
    redis_client.xack(STREAM, "fast", "4-1", "5-1")
    assert retention.trim_processed(redis_client, STREAM) == 1
    assert ids_left(redis_client) == ["3-1", "4-1", "5-1", "6-1"]


def test_no_stream_or_no_group_trims_nothing(redis_client: redis.Redis) -> None:
    assert retention.trim_processed(redis_client, STREAM) == 0
    add(redis_client, "1-1", "2-1")
    assert retention.trim_processed(redis_client, STREAM) == 0  # nobody has read it
    assert ids_left(redis_client) == ["1-1", "2-1"]
    redis_client.xgroup_create(STREAM, "g", id="0")
    assert retention.trim_processed(redis_client, STREAM) == 0  # a group that read nothing
    assert ids_left(redis_client) == ["1-1", "2-1"]


# --- caps on the results and dead streams ----------------------------------------------------


def _result(engine: Engine, mid: str) -> ledger.TicketIssuance:
    key = accept_booking(engine, "eguma", mid)
    ledger.record_final_error(
        engine, key, None, Status.FAILED, ledger.ResultError(type="validation_error", message="x"), False
    )
    row = ledger.get(engine, key)
    assert row is not None
    return row


def test_results_and_dead_streams_stay_near_their_cap(redis_client: redis.Redis, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    result = result_from_row(_result(engine, "m-cap"))
    for _ in range(500):
        publish_result(redis_client, "ticketrelay:results", result, maxlen=100)
    publish_results(redis_client, [("ticketrelay:results", result)] * 500, maxlen=100)
    for i in range(1000):
        dead_letter(redis_client, "ticketrelay:dead", {"message": "x"}, "r", f"{i}-1", STREAM, maxlen=100)
    for stream in ("ticketrelay:results", "ticketrelay:dead"):
        # Approximate trimming drops whole macro-nodes (100 entries by default): near, not at.
        assert 100 <= redis_client.xlen(stream) < 300, stream

    for _ in range(300):
        publish_result(redis_client, "ticketrelay:uncapped", result, maxlen=0)  # 0: unbounded
    assert redis_client.xlen("ticketrelay:uncapped") == 300


def test_the_worker_publishes_results_with_the_configured_cap(
    redis_client: redis.Redis, redis_url: str, sqlite_url: str
) -> None:
    engine = make_engine(sqlite_url)
    settings = Settings(redis_url=redis_url, database_url=sqlite_url, results_maxlen=100)
    deps = Deps(engine, redis_client, settings, sandbox_accounts("http://sandbox"), ClientCache())
    for i in range(1000):
        redis_client.xadd("ticketrelay:results", {"result": f"old {i}"})
    rows = [_result(engine, f"m-{i}") for i in range(3)]
    issuing.publish_finals(deps, rows)
    assert 100 <= redis_client.xlen("ticketrelay:results") < 300


def test_retention_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().results_maxlen, Settings().dead_maxlen) == (1_000_000, 100_000)
    assert Settings().intake_trim_interval_s == 10.0
    monkeypatch.setenv("TICKETRELAY_RESULTS_MAXLEN", "0")
    monkeypatch.setenv("TICKETRELAY_DEAD_MAXLEN", "500")
    monkeypatch.setenv("TICKETRELAY_INTAKE_TRIM_INTERVAL_S", "0")
    s = Settings()
    assert (s.results_maxlen, s.dead_maxlen, s.intake_trim_interval_s) == (0, 500, 0.0)


# --- the intake run loop ---------------------------------------------------------------------


def run_intake(intake: Intake, until: Any) -> None:
    stop = threading.Event()
    t = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_until(until)
    finally:
        stop.set()
        t.join(5)


def make_intake(client: redis.Redis, settings: Settings, **changes: Any) -> tuple[Intake, list[str]]:
    enqueued: list[str] = []
    s = settings.model_copy(update=changes)
    intake = Intake(
        client, make_engine(s.database_url), s, sandbox_accounts("http://sandbox"), enqueued.append
    )
    return intake, enqueued


def test_the_intake_loop_trims_what_it_acknowledged_and_caps_the_dead_stream(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings, intake_trim_interval_s=0.1, dead_maxlen=100)
    for i in range(5):
        redis_client.xadd(STREAM, {"message": json.dumps(envelope("eguma", f"m-{i}"))})
    last = redis_client.xadd(STREAM, {"message": "not json"}).decode()
    for i in range(1000):
        redis_client.xadd("ticketrelay:dead", {"dead_reason": f"old {i}"})

    run_intake(intake, lambda: redis_client.xlen(STREAM) == 1 and redis_client.xlen("ticketrelay:dead") < 300)
    assert len(enqueued) == 5
    assert ids_left(redis_client) == [last]  # the last delivered entry is the floor
    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0
    assert redis_client.xlen("ticketrelay:dead") >= 100


def test_the_intake_loop_does_not_trim_when_the_interval_is_zero(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, settings, intake_trim_interval_s=0)
    for i in range(3):
        redis_client.xadd(STREAM, {"message": json.dumps(envelope("eguma", f"m-{i}"))})
    # run_intake joins the loop, so the iteration that acknowledged the entries has finished.
    run_intake(intake, lambda: len(enqueued) == 3 and intake.processed == 3)
    assert redis_client.xlen(STREAM) == 3


def test_a_failing_trim_is_logged_and_intake_goes_on(
    redis_client: redis.Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_a: Any, **_k: Any) -> int:
        raise redis.ResponseError("trim refused")

    def trim_failures() -> int:
        return sum(r.__dict__.get("event") == "trim_failed" for r in caplog.records)

    monkeypatch.setattr(retention, "trim_processed", broken)
    intake, enqueued = make_intake(redis_client, settings, intake_trim_interval_s=0.01)
    stop = threading.Event()
    t = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.ERROR, logger="ticketrelay.intake"):
        t.start()
        try:
            redis_client.xadd(STREAM, {"message": json.dumps(envelope("eguma", "m-1"))})
            wait_until(lambda: len(enqueued) == 1 and trim_failures() >= 2)
            redis_client.xadd(STREAM, {"message": json.dumps(envelope("eguma", "m-2"))})
            wait_until(lambda: len(enqueued) == 2)
        finally:
            stop.set()
            t.join(5)
    assert not t.is_alive()
    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0
    assert redis_client.xlen(STREAM) == 2  # nothing trimmed: the trim always failed
