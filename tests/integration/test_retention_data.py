"""Retention of personal data in SQL and by age in the streams, on SQLite and PostgreSQL with
a real Redis: payloads dropped N days after a row is final, rows (with their outbox entries and
attempts) deleted after M days, in bounded batches; dead and results streams trimmed by age;
a row without its payload refused clearly by the bulk re-issuance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, select, text

from schemas.statuses import Status
from schemas.table import WebhookOutbox
from tests.helpers import accept_booking, envelope
from worker import ledger, retention
from worker.app import RETENTION_TASK, _schedule
from worker.ops.reissue import Run, Selection
from worker.ops.reissue.selection import PAYLOAD_GONE
from worker.results import result_from_row
from worker.settings import Settings, sandbox_accounts
from worker.webhooks import outbox

OUTBOX = WebhookOutbox.__table__  # type: ignore[attr-defined]
FAILED = ledger.ResultError(type="provider_error", message="down", retryable=True)


def final_row(engine: Engine, mid: str, status: Status = Status.FAILED) -> str:
    key = accept_booking(engine, "eguma", mid)
    assert ledger.record_final_error(engine, key, None, status, FAILED, False) is not None
    return key


def row(engine: Engine, key: str) -> ledger.TicketIssuance:
    found = ledger.get(engine, key)
    assert found is not None
    return found


def later(days: float) -> datetime:
    return ledger.utcnow() + timedelta(days=days)


def with_outbox(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        assert outbox.enqueue(conn, result_from_row(row(engine, key)), "https://cb.example.com/hook")


def outbox_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(OUTBOX.c.idempotency_key)).scalars())


def make_settings(**changes: object) -> Settings:
    return Settings().model_copy(update=changes)


def test_payloads_of_final_rows_are_dropped_after_the_retention_days(
    engine: Engine, redis_client: redis.Redis
) -> None:
    old = final_row(engine, "m-old")
    active = accept_booking(engine, "eguma", "m-active")  # queued: its payload is still needed
    sha = row(engine, old).payload_sha256
    s = make_settings(payload_retention_days=30)

    assert retention.run_retention(engine, redis_client, s, now=later(29)).payloads_dropped == 0
    assert row(engine, old).payload is not None

    report = retention.run_retention(engine, redis_client, s, now=later(31))
    assert report.payloads_dropped == 1
    gone = row(engine, old)
    assert gone.payload is None
    assert gone.payload_sha256 == sha  # a resend is still recognised
    assert gone.status == Status.FAILED
    assert row(engine, active).payload is not None
    # Done once: the next pass finds nothing more.
    assert retention.run_retention(engine, redis_client, s, now=later(31)).payloads_dropped == 0


def test_payload_retention_works_in_bounded_batches(engine: Engine, redis_client: redis.Redis) -> None:
    keys = [final_row(engine, f"m-{i}") for i in range(7)]
    s = make_settings(payload_retention_days=1, retention_batch=2, retention_max_batches=2)
    assert retention.run_retention(engine, redis_client, s, now=later(2)).payloads_dropped == 4
    assert sum(row(engine, k).payload is None for k in keys) == 4
    assert retention.run_retention(engine, redis_client, s, now=later(2)).payloads_dropped == 3
    assert all(row(engine, k).payload is None for k in keys)


def test_zero_days_keeps_payloads(engine: Engine, redis_client: redis.Redis) -> None:
    key = final_row(engine, "m-keep")
    s = make_settings(payload_retention_days=0)
    assert retention.run_retention(engine, redis_client, s, now=later(3650)).payloads_dropped == 0
    assert row(engine, key).payload is not None


def test_rows_are_deleted_after_the_row_retention_with_their_outbox_entries(
    engine: Engine, redis_client: redis.Redis
) -> None:
    old = final_row(engine, "m-old", Status.NEEDS_REVIEW)
    recent = final_row(engine, "m-recent")
    active = accept_booking(engine, "eguma", "m-active")
    with_outbox(engine, old)
    with_outbox(engine, recent)
    s = make_settings(row_retention_days=90)
    assert Settings().row_retention_days == 0  # off unless asked for

    assert retention.run_retention(engine, redis_client, s, now=later(89)).rows_deleted == 0
    report = retention.run_retention(engine, redis_client, s, now=later(91))
    assert report.rows_deleted == 2
    assert report.outbox_deleted == 2
    assert ledger.get(engine, old) is None and ledger.get(engine, recent) is None
    assert ledger.get(engine, active) is not None  # not final: never deleted
    assert outbox_keys(engine) == []


def test_row_deletion_takes_the_attempt_history_when_that_table_exists(
    engine: Engine, redis_client: redis.Redis
) -> None:
    old = final_row(engine, "m-old")
    kept = accept_booking(engine, "eguma", "m-active")
    s = make_settings(row_retention_days=1)
    first = final_row(engine, "m-first")
    assert retention.run_retention(engine, redis_client, s, now=later(2)).rows_deleted == 2
    assert ledger.get(engine, first) is None and ledger.get(engine, old) is None

    again = final_row(engine, "m-again")
    with engine.begin() as conn:
        for i, k in enumerate([again, again, kept]):
            conn.execute(
                text(
                    "INSERT INTO ticket_attempts (id, idempotency_key, attempt, started_at, recorded_at,"
                    " worker, outcome, in_doubt, probe)"
                    " VALUES (:i, :k, 1, :t, :t, 'w', 'issued', false, false)"
                ),
                {"i": i, "k": k, "t": datetime.now(UTC)},
            )
    report = retention.run_retention(engine, redis_client, s, now=later(2))
    assert (report.rows_deleted, report.attempts_deleted) == (1, 2)
    with engine.connect() as conn:
        left = list(conn.execute(text("SELECT idempotency_key FROM ticket_attempts")).scalars())
    assert left == [kept]


# --- the streams by age ----------------------------------------------------------------------


def _add_at(client: redis.Redis, stream: str, when: datetime, n: int = 1) -> None:
    ms = int(when.timestamp() * 1000)
    for i in range(n):
        client.xadd(stream, {"x": "personal"}, id=f"{ms}-{i}")


def test_dead_and_result_streams_are_trimmed_by_age(engine: Engine, redis_client: redis.Redis) -> None:
    now = ledger.utcnow()
    s = make_settings(dead_max_age_days=30, results_max_age_days=7, payload_retention_days=0)
    reply_to = "ticketrelay:results:shop-a"
    for stream, age in ((s.dead_stream, 30), (s.results_stream, 7), (reply_to, 7)):
        _add_at(redis_client, stream, now - timedelta(days=age, hours=1), n=3)
        _add_at(redis_client, stream, now - timedelta(days=age) + timedelta(hours=1), n=2)
    redis_client.set("ticketrelay:results:not-a-stream", "x")  # another type: left alone

    report = retention.run_retention(engine, redis_client, s, now=now)
    assert (report.dead_trimmed, report.results_trimmed) == (3, 6)
    for stream in (s.dead_stream, s.results_stream, reply_to):
        assert redis_client.xlen(stream) == 2, stream
    assert redis_client.get("ticketrelay:results:not-a-stream") == b"x"


def test_zero_age_keeps_stream_entries(engine: Engine, redis_client: redis.Redis) -> None:
    s = make_settings(dead_max_age_days=0, results_max_age_days=0)
    _add_at(redis_client, s.dead_stream, ledger.utcnow() - timedelta(days=400))
    _add_at(redis_client, s.results_stream, ledger.utcnow() - timedelta(days=400))
    retention.run_retention(engine, redis_client, s)
    assert redis_client.xlen(s.dead_stream) == redis_client.xlen(s.results_stream) == 1


# --- settings and the beat entry ---------------------------------------------------------------


def test_retention_settings_and_beat_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.payload_retention_days, s.row_retention_days) == (30, 0)
    assert (s.dead_max_age_days, s.results_max_age_days) == (30, 7)
    assert _schedule(s)["retention"]["task"] == RETENTION_TASK
    monkeypatch.setenv("TICKETRELAY_PAYLOAD_RETENTION_DAYS", "3")
    monkeypatch.setenv("TICKETRELAY_ROW_RETENTION_DAYS", "400")
    monkeypatch.setenv("TICKETRELAY_DEAD_MAX_AGE_DAYS", "10")
    monkeypatch.setenv("TICKETRELAY_RESULTS_MAX_AGE_DAYS", "2")
    monkeypatch.setenv("TICKETRELAY_RETENTION_INTERVAL_S", "0")
    s = Settings()
    assert (s.payload_retention_days, s.row_retention_days) == (3, 400)
    assert (s.dead_max_age_days, s.results_max_age_days) == (10, 2)
    assert "retention" not in _schedule(s)


# --- re-issuance of a row without its payload ---------------------------------------------------


def test_reissue_skips_a_row_without_payload_and_says_why(engine: Engine, redis_client: redis.Redis) -> None:
    dropped = final_row(engine, "m-dropped")
    kept = final_row(engine, "m-kept")
    assert ledger.drop_old_payloads(engine, later(1), 1) == 1  # the first row by id only
    assert row(engine, dropped).payload is None and row(engine, kept).payload is not None

    enqueued: list[str] = []
    run = Run(engine, redis_client, Settings(), enqueued.append, selection=Selection(statuses=["failed"]))
    run.load_or_create()
    assert run.drive(row(engine, dropped)) == PAYLOAD_GONE
    assert run.drive(row(engine, kept)) == "redriven"
    assert enqueued == [kept]
    assert row(engine, dropped).status == Status.FAILED  # untouched
    assert run.store.without_payload(run.selection) == 1


def test_reissue_from_an_export_brings_a_dropped_payload_back(
    engine: Engine, redis_client: redis.Redis
) -> None:
    key = final_row(engine, "m-back")
    payload = row(engine, key).payload
    ledger.drop_old_payloads(engine, later(1), 10)
    enqueued: list[str] = []
    run = Run(engine, redis_client, Settings(), enqueued.append, selection=Selection())
    run.load_or_create()
    run.drive_envelopes([json.dumps(envelope("eguma", "m-back"))], sandbox_accounts("http://sandbox"))
    assert enqueued == [key]
    back = row(engine, key)
    assert back.payload == payload and back.status == Status.QUEUED


def test_count_without_payload_counts_only_the_selection(engine: Engine) -> None:
    final_row(engine, "m-1")
    final_row(engine, "m-2", Status.NEEDS_REVIEW)
    ledger.drop_old_payloads(engine, later(1), 10)
    assert ledger.count_without_payload(engine, ledger.RowFilter(statuses=("failed",))) == 1
    assert ledger.count_without_payload(engine, ledger.RowFilter(statuses=("issued",))) == 0


def test_the_retention_task_is_registered_and_returns_counts_only() -> None:
    import tasks  # noqa: F401  (registers the tasks on the app)
    from worker.app import app

    assert RETENTION_TASK in app.tasks
    report = retention.RetentionReport(payloads_dropped=2, rows_deleted=1)
    assert report.as_dict() == {
        "payloads_dropped": 2,
        "rows_deleted": 1,
        "outbox_deleted": 0,
        "attempts_deleted": 0,
        "dead_trimmed": 0,
        "results_trimmed": 0,
    }
