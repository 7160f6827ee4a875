"""Poison input never halts intake, on SQLite and on PostgreSQL (the production database).

The report this reproduces: one envelope whose `reply_to` holds a NUL byte, or whose payload
has a field name with a NUL byte, made PostgreSQL refuse the text; intake took the refusal for
an outage and read the same entries forever, so the valid booking published right after never
got a row. On SQLite the NUL reply_to was accepted and its result written to a stream whose
name held a NUL byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from schemas.keys import idempotency_key
from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME, envelope
from worker import ledger
from worker.db import make_engine
from worker.intake import UNSTORABLE, Intake
from worker.settings import Settings, sandbox_accounts

STREAM = "ticketrelay:bookings"


@pytest.fixture
def db_settings(redis_url: str, database_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, database_url=database_url, consumer_name="poison-test", intake_block_ms=20
    )


def make_intake(client: redis.Redis, settings: Settings) -> tuple[Intake, list[str]]:
    enqueued: list[str] = []
    intake = Intake(
        client,
        make_engine(settings.database_url),
        settings,
        sandbox_accounts("http://sandbox"),
        enqueued.append,
    )
    intake.ensure_group()
    return intake, enqueued


def xadd(client: redis.Redis, env: dict[str, Any]) -> None:
    client.xadd(STREAM, {"message": json.dumps(env)})


def results_on(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"result"]) for _i, f in client.xrange(stream)]


def dead(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _i, f in client.xrange("ticketrelay:dead")]


def row_count(intake: Intake) -> int:
    with intake.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger.T)).scalar_one())


def run_until_idle(intake: Intake, max_reads: int = 5) -> None:
    """run_once until a read acknowledges nothing; an exception fails the test (before the
    fix, PostgreSQL's refusal escaped as an 'outage' and the read stayed pending forever)."""
    for _ in range(max_reads):
        if not intake.run_once():
            return
    raise AssertionError("intake kept reading entries")


def test_nul_bytes_are_dead_lettered_and_the_next_booking_is_accepted(
    redis_client: redis.Redis, db_settings: Settings
) -> None:
    intake, enqueued = make_intake(redis_client, db_settings)
    nul_reply = envelope("eguma", "m-nul-reply", reply_to="ticketrelay:results:a\x00b")
    nul_key = envelope("eguma", "m-nul-key")
    nul_key["payload"]["customer"]["x\x00" + CUSTOMER_NAME] = "y"
    xadd(redis_client, nul_reply)
    xadd(redis_client, nul_key)
    xadd(redis_client, envelope("eguma", "m-valid"))

    run_until_idle(intake)

    good = idempotency_key("eguma", "default", "m-valid")
    assert enqueued == [good]
    row = ledger.get(intake.engine, good)
    assert row is not None and row.status == "queued"
    assert redis_client.xpending(STREAM, db_settings.intake_group)["pending"] == 0

    letters = dead(redis_client)
    assert [json.loads(d[b"message"])["message_id"] for d in letters] == ["m-nul-reply", "m-nul-key"]
    for d in letters:
        reason = d[b"dead_reason"].decode()
        assert reason.startswith("invalid_")
        assert "\x00" not in reason and CUSTOMER_NAME not in reason and len(reason) <= 300
    assert "reply_to" in letters[0][b"dead_reason"].decode()
    assert b"payload.customer.<unknown field 4>" in letters[1][b"dead_reason"]

    # Both answered `rejected` on the default stream: the NUL reply_to is never a Redis key.
    out = {r["message_id"]: r for r in results_on(redis_client, "ticketrelay:results")}
    assert set(out) == {"m-nul-reply", "m-nul-key"}
    for mid, r in out.items():
        assert r["status"] == "rejected" and r["attempts"] == 0
        assert "\x00" not in r["error"]["message"] and CUSTOMER_NAME not in r["error"]["message"]
        stored = ledger.get(intake.engine, idempotency_key("eguma", "default", mid))
        assert stored is not None and stored.status == "rejected" and stored.reply_to == "ticketrelay:results"
    assert not [k for k in redis_client.scan_iter(match="*\x00*")]
    assert row_count(intake) == 3


def test_a_batch_the_database_refuses_is_retried_one_entry_at_a_time(
    redis_client: redis.Redis, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal validation could not foresee (here: a value the JSON column cannot encode,
    planted in the row of one entry): only that entry is dead-lettered, with a `rejected`
    result; the rest of the read is accepted."""
    intake, enqueued = make_intake(redis_client, db_settings)
    original = ledger._row_values

    def planted(b: ledger.NewBooking, status: ledger.Status, now: Any) -> dict[str, Any]:
        values = original(b, status, now)
        if b.message_id == "m-poison" and status == ledger.Status.QUEUED:
            values["tickets"] = [{object()}]  # neither JSON nor any SQL type: refused for good
        return values

    monkeypatch.setattr(ledger, "_row_values", planted)
    for mid in ("m-a", "m-poison", "m-b"):
        xadd(redis_client, envelope("eguma", mid))
    xadd(redis_client, envelope("eguma", "m-a"))  # a resend in the same read: no second task

    run_until_idle(intake)

    assert enqueued == [idempotency_key("eguma", "default", m) for m in ("m-a", "m-b")]
    [letter] = dead(redis_client)
    assert letter[b"dead_reason"].startswith(f"{UNSTORABLE}: ".encode())
    [result] = results_on(redis_client, "ticketrelay:results")
    assert result["message_id"] == "m-poison" and result["status"] == "rejected"
    assert result["error"]["type"] == UNSTORABLE
    assert redis_client.xpending(STREAM, db_settings.intake_group)["pending"] == 0


@pytest.mark.parametrize("column", ["reply_to", "metadata"])
def test_the_database_refusing_a_planted_value_is_not_an_outage(
    redis_client: redis.Redis, db_settings: Settings, monkeypatch: pytest.MonkeyPatch, column: str
) -> None:
    """A value that slipped past validation and that the database refuses (PostgreSQL: NUL in
    text; both: a string longer than the column, or metadata no JSON encoder takes): only that
    entry is dead-lettered; its rejected row is written without the producer's reply_to and
    metadata, so it still gets its `rejected` result on the default stream."""
    intake, enqueued = make_intake(redis_client, db_settings)
    original = ledger._row_values
    postgres = db_settings.database_url.startswith("postgresql")

    def planted(b: ledger.NewBooking, status: ledger.Status, now: Any) -> dict[str, Any]:
        values = original(b, status, now)
        if b.message_id == "m-poison" and values["reply_to"] != "ticketrelay:results":
            if column == "reply_to":
                values["reply_to"] = "ticketrelay:results:\x00" if postgres else object()
            else:
                values["message_metadata"] = {"k": float("nan") if postgres else {1, 2}}
        return values

    monkeypatch.setattr(ledger, "_row_values", planted)
    xadd(redis_client, envelope("eguma", "m-poison", reply_to="ticketrelay:results:own"))
    xadd(redis_client, envelope("eguma", "m-next"))

    run_until_idle(intake)

    assert enqueued == [idempotency_key("eguma", "default", "m-next")]
    [letter] = dead(redis_client)
    assert letter[b"dead_reason"].startswith(f"{UNSTORABLE}: ".encode())
    [result] = results_on(redis_client, "ticketrelay:results")
    assert result["message_id"] == "m-poison" and result["error"]["type"] == UNSTORABLE
    row = ledger.get(intake.engine, idempotency_key("eguma", "default", "m-poison"))
    assert row is not None and row.status == "rejected" and row.message_metadata == {}


def test_an_outage_still_leaves_the_read_pending(
    redis_client: redis.Redis, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake, enqueued = make_intake(redis_client, db_settings)
    xadd(redis_client, envelope("eguma", "m-wait"))

    def down(*_a: Any, **_k: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(ledger, "create_queued_many", down)
    with pytest.raises(OperationalError):
        intake.run_once()
    assert dead(redis_client) == [] and enqueued == []
    assert redis_client.xpending(STREAM, db_settings.intake_group)["pending"] == 1


@pytest.mark.parametrize("error", [DataError, IntegrityError])
def test_a_data_refusal_of_the_batch_does_not_leave_the_read_pending(
    redis_client: redis.Redis,
    db_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    """Before the fix every SQLAlchemyError counted as an outage: the read stayed pending."""
    intake, enqueued = make_intake(redis_client, db_settings)
    xadd(redis_client, envelope("eguma", "m-1"))
    xadd(redis_client, envelope("eguma", "m-2"))

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise error("INSERT", {"payload": CUSTOMER_EMAIL}, Exception("refused"))

    monkeypatch.setattr(ledger, "create_queued_many", refuse)
    run_until_idle(intake)
    # The batch refusal was not the entries' fault: one at a time, both are accepted.
    assert enqueued == [idempotency_key("eguma", "default", m) for m in ("m-1", "m-2")]
    assert dead(redis_client) == []


def test_the_run_loop_survives_an_error_outside_any_entry(
    redis_client: redis.Redis, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside the per-entry steps must not end the intake thread (that stops every
    booking): the loop logs it, backs off and reads again."""
    import threading

    from tests.helpers import wait_until

    intake, enqueued = make_intake(redis_client, db_settings)
    real = intake.run_once
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a bug")
        return real()

    monkeypatch.setattr(intake, "run_once", flaky)
    xadd(redis_client, envelope("eguma", "m-after-bug"))
    stop = threading.Event()
    t = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_until(lambda: enqueued == [idempotency_key("eguma", "default", "m-after-bug")])
    finally:
        stop.set()
        t.join(5)
