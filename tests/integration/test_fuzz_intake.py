"""Property-based fuzzing of the intake against a real Redis and a real database (SQLite and
PostgreSQL, the production database: it refuses text SQLite takes, NUL bytes first).

A hypothesis-generated batch of raw entries (valid envelopes mixed with mutated ones, garbage
bytes, malformed JSON, non-object JSON and entries without a `message` field) is XADDed to the
intake stream and drained with Intake.run_once. Whatever the batch: intake never raises, every
entry is acknowledged and answered (a ledger row plus one enqueued key, or one dead letter that
keeps the entry untouched, or for an entry over the size limit its sizes only), and every
rejected entry whose message_id can be read gets a `rejected` row and result. A second message
under an accepted message_id with another payload is refused ("different payload") and changes
nothing. NUL bytes, lone surrogates and control characters go into every string and every key
(reply_to, message_id, metadata, payload): no reason, dead letter or result repeats them, and no
Redis key is made of them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from schemas.keys import idempotency_key
from tests.fuzz_strategies import (
    PII_MARKERS,
    PROVIDERS,
    encode,
    json_values,
    mutated_envelopes,
    names,
    no_message_fields,
    op_envelope_field,
    op_odd_chars,
    op_odd_key,
    pii_envelope,
    raw_messages,
    with_names,
)
from worker import ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, Rejected, payload_hash, validate_entry

ACCOUNTS = sandbox_accounts("http://sandbox")
STREAM = "ticketrelay:bookings"
WITH_FIXTURES = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PLACEHOLDER = b"fz-1"  # the message_id of every generated envelope, made unique per entry
_runs = itertools.count()

Fields = dict[Any, Any]
PLAIN_KEY = re.compile(rb"[A-Za-z0-9:._-]+")
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff\ud800-\udfff]")


@pytest.fixture
def db_settings(settings: Settings, database_url: str) -> Settings:
    """The test settings on each database of the `database_url` fixture."""
    return settings.model_copy(update={"database_url": database_url})


def printable_and_clean(text: str, limit: int) -> None:
    assert len(text) <= limit and not UNPRINTABLE.search(text), text
    for marker in PII_MARKERS:
        assert marker not in text, (marker, text)


@st.composite
def raw_entries(draw: Any) -> Fields:
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "odd", "garbage", "no_message"]))
    if kind == "valid":
        env = pii_envelope(draw(st.sampled_from(PROVIDERS)), PLACEHOLDER.decode())
        return {b"message": encode(env, draw(st.booleans()))}
    if kind == "mutated":
        return {b"message": encode(draw(mutated_envelopes(PLACEHOLDER.decode())), draw(st.booleans()))}
    if kind == "odd":  # NUL, surrogates, control characters in keys and in envelope fields
        ops = [op_odd_key, op_envelope_field, op_odd_chars]
        env = draw(mutated_envelopes(PLACEHOLDER.decode(), ops=ops))
        return {b"message": encode(env, draw(st.booleans()))}
    if kind == "garbage":  # bytes, text, any JSON, deep nesting, truncated or UTF-16 envelopes
        return {b"message": draw(st.one_of(raw_messages, json_values.map(lambda v: json.dumps(v).encode())))}
    return draw(no_message_fields.filter(bool))


def unique(fields: Fields, mid: str) -> Fields:
    """Give the entry's envelope a message_id of its own (every PLACEHOLDER, bookingId too)."""
    return {k: v.replace(PLACEHOLDER, mid.encode()) if k == b"message" else v for k, v in fields.items()}


def reset(client: redis.Redis, settings_: Settings) -> tuple[Intake, list[str]]:
    """A fresh example: empty Redis and ledger, a new intake with a fake enqueue."""
    client.flushdb()
    settings_ = settings_.model_copy(update={"intake_block_ms": 5})  # drain() ends on an empty read
    engine = make_engine(settings_.database_url)
    with engine.begin() as conn:
        conn.execute(delete(ledger.T))
    enqueued: list[str] = []
    intake = Intake(client, engine, settings_, ACCOUNTS, enqueued.append)
    intake.ensure_group()
    return intake, enqueued


def drain(intake: Intake) -> None:
    while intake.run_once():  # any exception fails the property: intake must never raise
        pass


def row_count(intake: Intake) -> int:
    with intake.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger.T)).scalar_one())


def all_results(client: redis.Redis) -> list[dict[str, Any]]:
    out = []
    for key in sorted(client.scan_iter(match="ticketrelay:results*")):
        entries: Any = client.xrange(key)
        out += [json.loads(f[b"result"]) for _i, f in entries]
    return out


def dead_letters(client: redis.Redis) -> list[dict[bytes, bytes]]:
    entries: Any = client.xrange("ticketrelay:dead")
    return [f for _i, f in entries]


def untouched(entry: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """What a dead letter must keep of the entry (an own field named dead_* becomes orig_dead_*)."""
    return {(b"orig_" + k if k.startswith(b"dead_") else k): v for k, v in entry.items()}


@WITH_FIXTURES
@given(batch=st.lists(raw_entries(), min_size=1, max_size=12))
def test_every_entry_of_a_random_batch_is_acknowledged_and_answered(
    redis_client: redis.Redis, db_settings: Settings, batch: list[Fields]
) -> None:
    settings = db_settings
    intake, enqueued = reset(redis_client, settings)
    run = next(_runs)
    for i, fields in enumerate(batch):
        redis_client.xadd(STREAM, unique(fields, f"fz-{run}-{i}"))
    # The oracle: validate_entry on each entry exactly as intake reads it back from Redis.
    stored: Any = redis_client.xrange(STREAM)
    assert len(stored) == len(batch)
    verdicts = {eid.decode(): (f, validate_entry(f, intake.settings, ACCOUNTS)) for eid, f in stored}

    drain(intake)

    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0
    accepted = [v for _f, v in verdicts.values() if isinstance(v, Accepted)]
    rejected: dict[str, tuple[Fields, Rejected]] = {
        eid: (f, v) for eid, (f, v) in verdicts.items() if isinstance(v, Rejected)
    }

    # Valid ones: exactly one queued row each (the input payload) and one enqueued key each.
    assert enqueued == [v.idempotency_key for v in accepted]
    for v in accepted:
        row = ledger.get(intake.engine, v.idempotency_key)
        assert row is not None and row.status == "queued"
        assert row.payload == v.envelope.payload and row.payload_sha256 == payload_hash(v.envelope.payload)

    # Rejected ones: exactly one dead letter each, keeping the entry untouched, with the reason.
    dead = dead_letters(redis_client)
    assert len(dead) == len(rejected), [d[b"dead_reason"] for d in dead]
    for d in dead:
        fields, bad = rejected[d.pop(b"dead_entry_id").decode()]
        reason = d.pop(b"dead_reason").decode()
        assert reason.startswith(f"{bad.error_type}: "), reason
        printable_and_clean(reason, 300)
        assert d.pop(b"dead_stream") == STREAM.encode() and d.pop(b"dead_at")
        if bad.error_type == "too_large":
            # Never copied (it is not even read): its sizes and a scrubbed head instead.
            assert int(d.pop(b"oversized_size")) == sum(len(k) + len(v) for k, v in fields.items())
            assert d.pop(b"oversized_fields") and b"oversized_head" in d
            assert set(d) == {b"oversized_head"}
        else:
            assert d == untouched(fields)

    # A readable message_id gets a `rejected` row and a `rejected` result, each time it is seen.
    readable = [v for _f, v in rejected.values() if v.message_id is not None]
    results = all_results(redis_client)
    assert Counter(r["message_id"] for r in results) == Counter(v.message_id for v in readable)
    for r in results:
        assert r["status"] == "rejected" and r["attempts"] == 0 and r["tickets"] == []
        printable_and_clean(r["error"]["message"], 300)
        assert r["idempotency_key"] == idempotency_key(r["provider"], r["account"], r["message_id"])
        row = ledger.get(intake.engine, r["idempotency_key"])
        assert row is not None and row.status == "rejected" and row.payload is None
    keys = {v.idempotency_key for v in accepted} | {v.idempotency_key for v in readable}
    assert row_count(intake) == len(keys)
    # Every key intake made (streams, group, metrics) has a plain name: none from a producer's
    # odd reply_to.
    made: Any = list(redis_client.scan_iter())
    assert all(PLAIN_KEY.fullmatch(k) for k in made), made
    intake.engine.dispose()


@st.composite
def two_payloads(draw: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A provider and two valid envelopes under one message_id whose payloads differ."""
    provider = draw(st.sampled_from(PROVIDERS))
    envs = []
    for _ in range(2):
        env = with_names(provider, "fz-x", draw(names), draw(names), {"source": "fuzz"})
        if provider == "eguma":
            env["payload"]["items"][0]["quantity"] = draw(st.integers(1, 1000))
        elif provider == "remypass":
            env["payload"]["seat"] = draw(st.sampled_from(["A12", "A13", "B1"]))
        envs.append(env)
    assume(payload_hash(envs[0]["payload"]) != payload_hash(envs[1]["payload"]))
    return provider, envs[0], envs[1]


@WITH_FIXTURES
@given(
    pair=two_payloads(),
    second_invalid=st.booleans(),
    first_final=st.booleans(),
    ascii_only=st.booleans(),
)
def test_same_message_id_with_another_payload_is_refused_and_changes_nothing(
    redis_client: redis.Redis,
    db_settings: Settings,
    pair: tuple[str, dict[str, Any], dict[str, Any]],
    second_invalid: bool,
    first_final: bool,
    ascii_only: bool,
) -> None:
    provider, first, second = pair
    mid = f"fz-x-{next(_runs)}"
    first["message_id"] = second["message_id"] = mid
    if second_invalid:  # a corrected-then-broken resend: invalid, but its message_id is readable
        second["payload"].pop(sorted(second["payload"])[0])
    settings = db_settings
    intake, enqueued = reset(redis_client, settings)
    key = idempotency_key(provider, "default", mid)

    redis_client.xadd(STREAM, {b"message": encode(first, ascii_only)})
    drain(intake)
    assert enqueued == [key]
    if first_final:  # the first message already has its final answer, published once
        ledger.record_final_error(
            intake.engine,
            key,
            None,
            ledger.Status.FAILED,
            ledger.ResultError(type="validation_error", message="x"),
            False,
        )
        redis_client.xadd(STREAM, {b"message": encode(first, ascii_only)})  # a repeat republishes
        drain(intake)
    before = ledger.get(intake.engine, key)
    results_before = all_results(redis_client)
    assert before is not None and before.payload == first["payload"]

    second_raw = encode(second, ascii_only)
    redis_client.xadd(STREAM, {b"message": second_raw})
    drain(intake)

    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0
    after = ledger.get(intake.engine, key)
    assert after is not None and after.model_dump() == before.model_dump()  # the row is unchanged
    assert row_count(intake) == 1 and enqueued == [key]  # no second row, no second task
    [dead] = dead_letters(redis_client)
    assert b"different payload" in dead[b"dead_reason"] and mid.encode() in dead[b"dead_reason"]
    assert dead[b"message"] == second_raw  # kept untouched
    # No result that could contradict the first message's answer: nothing new was published.
    assert all_results(redis_client) == results_before
    assert all(r["status"] == before.status for r in results_before)
    intake.engine.dispose()
