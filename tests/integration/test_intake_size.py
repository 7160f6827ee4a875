"""Entry sizes at intake, against a real Redis: an oversized entry is dead-lettered from its
sizes and first bytes without its body ever reaching intake, the rest of its read goes on,
and one read holds about intake_read_budget_bytes at most, in every read mode."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME, envelope
from worker import intake_read, ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.intake_read import Oversized
from worker.settings import Settings, sandbox_accounts

STREAM = "ticketrelay:bookings"
KB = 1024


def make_intake(client: redis.Redis, settings: Settings, consumer: str = "c1", **changes: Any) -> Intake:
    s = settings.model_copy(update={"consumer_name": consumer, **changes})
    intake = Intake(
        client, make_engine(s.database_url), s, sandbox_accounts("http://sandbox"), lambda _k: None
    )
    intake.ensure_group()
    return intake


def add(client: redis.Redis, text: str | bytes, **extra: bytes) -> str:
    return client.xadd(STREAM, {"message": text, **extra}).decode()


def padded(mid: str, size: int) -> str:
    """A valid envelope of about `size` bytes (the padding sits in its metadata)."""
    env = envelope("eguma", mid)
    base = len(json.dumps(env))
    env["metadata"] = {"pad": "p" * max(0, size - base - 20)}
    return json.dumps(env)


def huge(mid: str, size: int) -> str:
    """An envelope far over the limit: identity first, then a payload full of personal data."""
    env = envelope("eguma", mid)
    env["metadata"] = {"shop": "north", "contact": CUSTOMER_EMAIL, "phone": "+34 600 123 987"}
    text = json.dumps(env)
    return text[:-1] + ', "zz": "' + (CUSTOMER_NAME + " ") * (size // (len(CUSTOMER_NAME) + 1)) + '"}'


def dead(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _i, f in client.xrange("ticketrelay:dead")]


def results(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(f[b"result"]) for _i, f in client.xrange("ticketrelay:results")]


def test_an_oversized_entry_is_dead_lettered_without_its_body_and_the_read_goes_on(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake = make_intake(redis_client, settings)
    add(redis_client, padded("m-before", 2 * KB))
    big_text = huge("m-big", 3 * 1024 * KB)
    big_id = add(redis_client, big_text)
    add(redis_client, padded("m-after", 2 * KB))

    read = intake._read()
    assert [type(f) for _i, f in read] == [dict, Oversized, dict]
    big = read[1][1]
    assert isinstance(big, Oversized)
    assert big.size == len(b"message") + len(big_text.encode())
    assert big.message_bytes == len(big_text.encode())
    assert len(big.head) == intake_read.HEAD_BYTES  # only the first bytes left Redis

    intake._run_batch(read, acked := [])
    redis_client.xack(STREAM, settings.intake_group, *acked)
    assert sorted(acked) == sorted(i for i, _f in read)
    letters = dead(redis_client)
    assert len(letters) == 1
    letter = letters[0]
    assert b"message" not in letter
    assert letter[b"dead_entry_id"].decode() == big_id
    assert letter[b"oversized_size"] == str(big.size).encode()
    assert letter[b"oversized_fields"] == f"message={len(big_text.encode())}".encode()
    assert letter[b"dead_reason"].startswith(b"too_large:")
    head = letter[b"oversized_head"].decode()
    assert '"message_id": "m-big"' in head  # the envelope's identity is kept
    for personal in (CUSTOMER_EMAIL, CUSTOMER_NAME, "600 123 987", "Secretcustomer"):
        assert personal not in head
    assert sum(len(v) for v in letter.values()) < 2 * KB
    # A rejected result for the message_id read from the first bytes; the others accepted.
    rejected = [r for r in results(redis_client) if r["status"] == "rejected"]
    assert [(r["message_id"], r["error"]["type"]) for r in rejected] == [("m-big", "too_large")]
    assert {"m-before", "m-after"} <= {r.message_id for r in _rows(intake)}
    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0


def _rows(intake: Intake) -> list[Any]:
    return ledger.rows_for_message(intake.engine, "m-before") + ledger.rows_for_message(
        intake.engine, "m-after"
    )


def test_an_entry_made_big_by_other_fields_is_oversized_too(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake = make_intake(redis_client, settings, intake_entry_slack_bytes=1 * KB)
    add(redis_client, padded("m-small", 1 * KB), extra=b"x" * (settings.max_message_bytes + 2 * KB))
    [(_id, big)] = intake._read()
    assert isinstance(big, Oversized)
    assert dict(big.fields) == {b"message": big.message_bytes, b"extra": settings.max_message_bytes + 2 * KB}


def test_a_read_is_bounded_by_bytes(redis_client: redis.Redis, settings: Settings) -> None:
    budget = 256 * KB
    intake = make_intake(redis_client, settings, intake_read_budget_bytes=budget, intake_linger_ms=0)
    for i in range(30):
        add(redis_client, padded(f"m-{i}", 40 * KB))
    sizes: list[int] = []
    seen = 0
    while seen < 30:
        read = intake._read()
        assert read, "every entry is read in the end"
        held = sum(len(k) + len(v) for _i, f in read if isinstance(f, dict) for k, v in f.items())
        # Up to the budget, plus the one entry that crossed it (an entry within the limit).
        assert held < budget + 41 * KB
        sizes.append(len(read))
        intake._run_batch(read, acked := [])
        redis_client.xack(STREAM, settings.intake_group, *acked)
        seen += len(read)
    assert max(sizes) == 7 and len(sizes) == 5  # 7 entries of 40 KB reach 256 KB, not 100
    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 0


def test_oversized_entries_count_against_the_budget_so_one_call_examines_few(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake = make_intake(redis_client, settings, intake_read_budget_bytes=1024 * KB)
    for i in range(5):
        add(redis_client, huge(f"m-big-{i}", 700 * KB))
    first = intake.reader.read("new", 100)
    assert len(first.entries) == 2  # 700 KB, then 1.4 MB seen: the budget stops the call
    assert all(isinstance(f, Oversized) for _i, f in first.entries)
    # The others were not delivered by that call: they come with the next ones.
    assert redis_client.xpending(STREAM, settings.intake_group)["pending"] == 2


def test_own_pending_and_reclaimed_entries_are_read_the_same_bounded_way(
    redis_client: redis.Redis, settings: Settings
) -> None:
    budget = 128 * KB
    make_intake(redis_client, settings, consumer="crashed")
    ids = [add(redis_client, padded(f"m-{i}", 40 * KB)) for i in range(4)]
    big_id = add(redis_client, huge("m-big", 600 * KB))
    # Delivered to a consumer that then died without acknowledging anything.
    redis_client.xreadgroup(settings.intake_group, "crashed", {STREAM: ">"}, count=10)

    rescuer = make_intake(redis_client, settings, consumer="rescuer", intake_read_budget_bytes=budget)
    claimed = rescuer.reader.read("claim", 100, min_idle_ms=0)
    assert [i for i, _f in claimed.entries] == ids[:4]  # 160 KB seen: stops after the 4th
    consumers = {c["name"]: c["pending"] for c in redis_client.xinfo_consumers(STREAM, settings.intake_group)}
    assert consumers == {b"crashed": 1, b"rescuer": 4}  # the big one was not taken yet

    # The rescuer's own pending entries (what it reads first after a restart): bounded too.
    own = rescuer.reader.read("own", 100, budget_bytes=64 * KB)
    assert [i for i, _f in own.entries] == ids[:2]
    redis_client.xack(STREAM, settings.intake_group, *ids[:4])
    claimed = rescuer.reader.read("claim", 100, min_idle_ms=0)
    assert [(i, type(f)) for i, f in claimed.entries] == [(big_id, Oversized)]
    assert [(i, type(f)) for i, f in rescuer.reader.read("own", 100).entries] == [(big_id, Oversized)]


def test_a_deleted_pending_entry_is_skipped(redis_client: redis.Redis, settings: Settings) -> None:
    intake = make_intake(redis_client, settings)
    first = add(redis_client, padded("m-1", KB))
    second = add(redis_client, padded("m-2", KB))
    redis_client.xreadgroup(settings.intake_group, "c1", {STREAM: ">"}, count=10)
    redis_client.xdel(STREAM, first)
    assert [i for i, _f in intake.reader.read("own", 10).entries] == [second]


def test_an_idle_intake_waits_and_returns_nothing(redis_client: redis.Redis, settings: Settings) -> None:
    intake = make_intake(redis_client, settings, intake_block_ms=100)
    assert intake._read() == []
    add(redis_client, padded("m-1", KB))
    assert len(intake._read()) == 1


def test_an_entry_published_while_intake_waits_is_read_at_once(
    redis_client: redis.Redis, settings: Settings
) -> None:
    intake = make_intake(redis_client, settings, intake_block_ms=3000, intake_linger_ms=0)
    got: list[Any] = []
    started = time.monotonic()
    reader = threading.Thread(target=lambda: got.append((intake._read(), time.monotonic())))
    reader.start()
    time.sleep(0.3)
    add(redis_client, padded("m-1", KB))
    published = time.monotonic()
    reader.join(5)
    [(read, done)] = got
    assert len(read) == 1
    # Polled, not blocked for the whole intake_block_ms: it came soon after it was published.
    assert done - published < 0.5 and done - started < 2.0
