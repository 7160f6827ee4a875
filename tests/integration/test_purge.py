"""`ticketrelay purge`, on SQLite and PostgreSQL with a real Redis: every copy of one message
goes (the row's personal fields or the row, outbox entries, attempt history when that table
exists, dead letters, processed bookings entries, results in the default and the reply_to
stream), nothing of another message does, and nothing changes while the message is in flight."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, text

from schemas.statuses import Status
from schemas.table import WebhookOutbox
from tests.helpers import CUSTOMER_EMAIL, envelope
from worker import ledger
from worker.ops import purge
from worker.results import dead_letter, publish_result, result_from_row
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, validate_entry
from worker.webhooks import outbox

OUTBOX = WebhookOutbox.__table__  # type: ignore[attr-defined]
REPLY_TO = "ticketrelay:results:shop-7"
S = Settings()


def accept(engine: Engine, mid: str, **changes: Any) -> tuple[str, str]:
    text_ = json.dumps(envelope("eguma", mid, **changes))
    verdict = validate_entry({b"message": text_.encode()}, S, sandbox_accounts("http://sandbox"))
    assert isinstance(verdict, Accepted)
    ledger.create_queued(engine, verdict.booking())
    return verdict.idempotency_key, text_


def finish(engine: Engine, key: str) -> ledger.TicketIssuance:
    error = ledger.ResultError(type="provider_error", message="down", retryable=True)
    row = ledger.record_final_error(engine, key, None, Status.NEEDS_REVIEW, error, True)
    assert row is not None
    return row


def stream_ids(client: redis.Redis, stream: str) -> list[str]:
    return [i.decode() for i, _f in client.xrange(stream)]


class World:
    """One message (m-gone) with a copy in every place, and another (m-stays) beside it."""

    def __init__(self, engine: Engine, client: redis.Redis) -> None:
        self.engine, self.client = engine, client
        self.key, raw = accept(engine, "m-gone", reply_to=REPLY_TO, metadata={"contact": CUSTOMER_EMAIL})
        self.other, other_raw = accept(engine, "m-stays")
        # The bookings stream: both entries taken in and acknowledged by intake's group.
        self.booking = client.xadd(S.intake_stream, {"message": raw}).decode()
        self.other_booking = client.xadd(S.intake_stream, {"message": other_raw}).decode()
        client.xgroup_create(S.intake_stream, S.intake_group, id="0")
        client.xreadgroup(S.intake_group, "c", {S.intake_stream: ">"}, count=10)
        client.xack(S.intake_stream, S.intake_group, self.booking, self.other_booking)
        client.xadd(S.intake_stream, {"message": "later"})  # keeps the floor above both
        client.xreadgroup(S.intake_group, "c", {S.intake_stream: ">"}, count=10)
        for key in (self.key, self.other):
            row = finish(engine, key)
            result = result_from_row(row)
            publish_result(client, row.reply_to, result, default_stream=S.results_stream)
            publish_result(client, S.results_stream, result, default_stream=S.results_stream)
            with engine.begin() as conn:
                outbox.enqueue(conn, result, "https://cb.example.com/hook")
        # Dead letters: a resend with another payload (the whole entry), an oversized entry's
        # summary, a message that is not JSON naming the id, and one of the other message.
        changed = json.dumps(envelope("eguma", "m-gone", metadata={"x": "y"}))
        dead_letter(
            client, S.dead_stream, {"message": changed}, "duplicate_message_id", "1-1", S.intake_stream
        )
        dead_letter(
            client,
            S.dead_stream,
            {"oversized_size": "9", "oversized_head": '{"message_id": "m-gone", "provider": "eguma",'},
            "too_large",
            "1-2",
            S.intake_stream,
        )
        dead_letter(client, S.dead_stream, {"message": '{"message_id": "m-gone", broken'}, "bad", "1-3", "s")
        dead_letter(client, S.dead_stream, {"message": other_raw}, "dup", "1-4", S.intake_stream)
        dead_letter(client, S.dead_stream, {"message": '{"message_id": "m-gone-2"}'}, "bad", "1-5", "s")
        with engine.begin() as conn:
            for i, k in enumerate([self.key, self.key, self.other]):
                conn.execute(
                    text(
                        "INSERT INTO ticket_attempts (id, idempotency_key, attempt, started_at, recorded_at,"
                        " worker, outcome, in_doubt, probe)"
                        " VALUES (:i, :k, 1, :t, :t, 'w', 'issued', false, false)"
                    ),
                    {"i": i, "k": k, "t": datetime.now(UTC)},
                )

    def outbox_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(conn.execute(select(OUTBOX.c.idempotency_key)).scalars())

    def attempt_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(conn.execute(text("SELECT idempotency_key FROM ticket_attempts")).scalars())

    def dead_ids(self) -> list[str]:
        return [f[b"dead_entry_id"].decode() for _i, f in self.client.xrange(S.dead_stream)]

    def result_mids(self, stream: str) -> list[str]:
        return [json.loads(f[b"result"])["message_id"] for _i, f in self.client.xrange(stream)]


def test_purge_removes_every_copy_of_the_message_and_nothing_else(
    engine: Engine, redis_client: redis.Redis
) -> None:
    w = World(engine, redis_client)
    before = ledger.get(engine, w.key)
    assert before is not None and before.payload and before.message_metadata

    plan, report = purge.purge_message(engine, redis_client, S, "m-gone")

    row = ledger.get(engine, w.key)
    assert row is not None  # a tombstone: a resend is answered from it, not issued again
    assert (row.payload, row.tickets, row.qr_codes, row.message_metadata) == (None, [], None, {})
    assert (row.status, row.payload_sha256) == (before.status, before.payload_sha256)
    other = ledger.get(engine, w.other)
    assert other is not None and other.payload is not None
    assert w.outbox_keys() == [w.other]
    assert w.attempt_keys() == [w.other]
    assert w.dead_ids() == ["1-4", "1-5"]
    assert w.result_mids(S.results_stream) == ["m-stays", "m-stays"]
    assert w.result_mids(REPLY_TO) == []
    assert w.booking not in stream_ids(redis_client, S.intake_stream)
    assert w.other_booking in stream_ids(redis_client, S.intake_stream)
    assert (report.rows, report.outbox, report.attempts) == (1, 1, 2)
    assert report.entries == {S.dead_stream: 3, S.results_stream: 1, REPLY_TO: 1, S.intake_stream: 1}
    printed = "\n".join(purge.describe_plan(plan) + purge.describe_report(plan, report))
    assert CUSTOMER_EMAIL not in printed and "tombstone" in printed

    # Done: a second purge finds only the tombstone.
    again = purge.find(engine, redis_client, S, "m-gone")
    assert [r.idempotency_key for r in again.rows] == [w.key] and again.entries == {}


def test_purge_can_delete_the_rows(engine: Engine, redis_client: redis.Redis) -> None:
    w = World(engine, redis_client)
    _plan, report = purge.purge_message(engine, redis_client, S, "m-gone", delete_rows=True)
    assert report.rows == 1 and ledger.get(engine, w.key) is None
    assert ledger.get(engine, w.other) is not None
    assert w.outbox_keys() == [w.other] and w.attempt_keys() == [w.other]


def test_another_provider_narrows_the_purge(engine: Engine, redis_client: redis.Redis) -> None:
    w = World(engine, redis_client)
    plan, report = purge.purge_message(engine, redis_client, S, "m-gone", provider="remypass")
    assert plan.rows == [] and report.rows == 0
    # Only the broken message goes: it names no provider; the others name eguma.
    assert w.dead_ids() == ["1-1", "1-2", "1-4", "1-5"]


def test_purge_refuses_while_the_message_is_in_flight(engine: Engine, redis_client: redis.Redis) -> None:
    key, raw = accept(engine, "m-busy")
    dead_letter(redis_client, S.dead_stream, {"message": raw}, "dup", "1-1", S.intake_stream)
    with pytest.raises(purge.PurgeRefused, match="queued"):
        purge.purge_message(engine, redis_client, S, "m-busy")
    row = ledger.get(engine, key)
    assert row is not None and row.payload is not None
    assert redis_client.xlen(S.dead_stream) == 1

    finish(engine, key)
    redis_client.xadd(S.intake_stream, {"message": raw})  # a resend not taken in yet
    with pytest.raises(purge.PurgeRefused, match="not processed yet"):
        purge.purge_message(engine, redis_client, S, "m-busy")
    assert redis_client.xlen(S.dead_stream) == 1


def test_the_command_shows_then_removes_with_yes(
    engine: Engine,
    redis_client: redis.Redis,
    redis_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import worker.db

    w = World(engine, redis_client)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    monkeypatch.setattr(purge, "get_settings", lambda: settings)
    monkeypatch.setattr(worker.db, "get_engine", lambda: engine)
    parser = argparse.ArgumentParser()
    purge.add_parser(parser.add_subparsers())

    args = parser.parse_args(["purge", "--message-id", "m-gone"])
    assert args.fn(args) == 0
    shown = capsys.readouterr().out
    assert f"row {w.key}" in shown and "nothing removed" in shown
    assert len(w.dead_ids()) == 5

    args = parser.parse_args(["purge", "--message-id", "m-gone", "--yes"])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "removed: sql 1 row(s)" in out and f"removed: redis {S.dead_stream} 3 entries" in out
    assert CUSTOMER_EMAIL not in out
    assert w.dead_ids() == ["1-4", "1-5"]


def test_entry_matching() -> None:
    env = json.dumps({"message_id": "m-1", "provider": "eguma", "account": "a"})
    assert purge.entry_matches({b"message": env.encode()}, "m-1")
    assert purge.entry_matches({b"message": env.encode()}, "m-1", "eguma", "a")
    assert not purge.entry_matches({b"message": env.encode()}, "m-1", "remypass")
    assert not purge.entry_matches({b"message": env.encode()}, "m-1", account="b")
    assert not purge.entry_matches({b"message": env.encode()}, "m-")  # not a prefix match
    assert purge.entry_matches({b"oversized_head": b'{"message_id":"m-1",'}, "m-1")
    assert not purge.entry_matches({b"message": b"m-1 in prose"}, "m-1")
