"""Results go to their reply_to stream, unless that key cannot take them: a name outside the
plain charset (a row written before the check) or a key holding another type. Those results
go to the default stream and the rest of the batch is not held up. Dead letters keep the entry
untouched, with a clean reason."""

from __future__ import annotations

import json
from typing import Any

import redis

from schemas.result import ResultMessage
from worker.ledger import utcnow
from worker.results import dead_letter, publish_result, publish_results

DEFAULT = "ticketrelay:results"


def result(mid: str) -> ResultMessage:
    return ResultMessage(
        message_id=mid,
        idempotency_key=f"key-{mid}",
        provider="eguma",
        account="default",
        generation=0,
        status="rejected",
        attempts=0,
        completed_at=utcnow(),
    )


def mids(client: redis.Redis, stream: str) -> list[str]:
    entries: Any = client.xrange(stream)
    return [json.loads(f[b"result"])["message_id"] for _i, f in entries]


def test_an_invalid_stream_name_never_becomes_a_key(redis_client: redis.Redis) -> None:
    publish_results(
        redis_client,
        [
            ("ticketrelay:results:a\x00b", result("m-nul")),
            ("ticketrelay:results:ok", result("m-ok")),
            ("ticketrelay:results:\u202ex", result("m-bidi")),
        ],
        default_stream=DEFAULT,
    )
    assert mids(redis_client, DEFAULT) == ["m-nul", "m-bidi"]
    assert mids(redis_client, "ticketrelay:results:ok") == ["m-ok"]
    keys: Any = redis_client.keys("*")
    assert sorted(keys) == [b"ticketrelay:results", b"ticketrelay:results:ok"]


def test_a_key_of_another_type_sends_its_result_to_the_default_stream(redis_client: redis.Redis) -> None:
    redis_client.set("ticketrelay:results:taken", "a string, not a stream")
    publish_results(
        redis_client,
        [("ticketrelay:results:taken", result("m-taken")), ("ticketrelay:results:b", result("m-b"))],
        default_stream=DEFAULT,
    )
    assert mids(redis_client, DEFAULT) == ["m-taken"]
    assert mids(redis_client, "ticketrelay:results:b") == ["m-b"]
    publish_result(redis_client, "ticketrelay:results:taken", result("m-one"), default_stream=DEFAULT)
    assert mids(redis_client, DEFAULT) == ["m-taken", "m-one"]
    assert redis_client.get("ticketrelay:results:taken") == b"a string, not a stream"


def test_the_dead_letter_reason_is_clean_and_bounded(redis_client: redis.Redis) -> None:
    fields = {b"message": b"{\x00}", b"dead_reason": b"the producer's own"}
    dead_letter(
        redis_client, "ticketrelay:dead", fields, "invalid_json: a\x00b\x1b[31m " + "x" * 400, "1-0", "s"
    )
    [(_id, entry)] = redis_client.xrange("ticketrelay:dead")
    reason = entry[b"dead_reason"].decode()
    assert reason.startswith("invalid_json: a b [31m") and len(reason) == 300 and reason.isprintable()
    assert entry[b"message"] == b"{\x00}" and entry[b"orig_dead_reason"] == b"the producer's own"


def test_the_configured_stream_is_taken_even_outside_the_reply_to_charset(redis_client: redis.Redis) -> None:
    tagged = "ticketrelay:{results}"  # a Redis Cluster hash tag: the operator's choice
    publish_results(
        redis_client,
        [(tagged, result("m-own")), ("ticketrelay:results:\x00", result("m-bad"))],
        default_stream=tagged,
    )
    assert mids(redis_client, tagged) == ["m-own", "m-bad"]
