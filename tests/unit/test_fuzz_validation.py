"""Property-based fuzzing of validate_entry (raw stream entry -> Accepted | Rejected).

Inputs start from a valid envelope of each provider carrying distinctive personal data and are
mutated (keys dropped, types changed, odd characters, huge strings and numbers, deep nesting,
bad dates, extra fields, broken provider rules), or are arbitrary JSON, raw bytes (invalid
UTF-8 included) and entries without a `message` field. Properties:

- validate_entry never raises and answers Accepted or Rejected;
- a Rejected reason never repeats the customer's personal data, and a payload error names the
  field path;
- an Accepted message round-trips (its payload is the input payload, same hash and key) and is
  strict UTF-8 JSON (what PostgreSQL, httpx and the result stream need);
- valid but unusual names (any Unicode, emoji, RTL, whitespace) are accepted, and survive
  unchanged through the ledger row, the provider request and the result (worker.issuing.process
  with the in-process sandbox).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import fakeredis
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.keys import idempotency_key
from schemas.result import ResultMessage
from tests.fuzz_strategies import (
    PII_MARKERS,
    PROVIDERS,
    encode,
    mutated_envelopes,
    names,
    names_of,
    no_message_fields,
    op_bad_number,
    op_envelope_field,
    op_odd_chars,
    op_odd_key,
    raw_messages,
    unicode_metadata,
    with_names,
)
from worker import issuing, ledger
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.providers import build_client
from worker.settings import AccountConfig, Settings, sandbox_accounts
from worker.validation import Accepted, Rejected, payload_hash, validate_entry

S = Settings(redis_url="redis://unused", database_url="sqlite://")
ACCOUNTS = sandbox_accounts("http://sandbox")
ERROR_TYPES = {
    "invalid_message",
    "invalid_json",
    "too_large",
    "invalid_envelope",
    "unknown_provider",
    "unknown_account",
    "missing_credentials",
    "invalid_payload",
}
MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REPLY_TO = re.compile(r"ticketrelay:results[A-Za-z0-9:._-]{0,237}")
# What a reason may never hold: control characters (NUL included), bidi and zero-width
# format characters, line separators, lone surrogates.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff\ud800-\udfff]")

FUZZ = settings(max_examples=100, deadline=None)


# --- checks -----------------------------------------------------------------------------------


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def check_rejected(v: Rejected, raw: bytes) -> None:
    assert v.error_type in ERROR_TYPES, v
    assert v.reason and len(v.reason) <= 300
    assert not UNPRINTABLE.search(v.reason), v.reason
    for marker in PII_MARKERS:
        assert marker not in v.reason, (marker, v.reason)
    if v.reply_to is not None:  # where the rejected result goes: a plain stream name only
        assert REPLY_TO.fullmatch(v.reply_to), v.reply_to
    if v.error_type == "invalid_payload":
        detail = v.reason.split(" payload is invalid: ", 1)[-1]
        # "payload" (a rule over the whole body) or "payload.items.0.quantity": a field path.
        assert re.match(r"payload(\.[^:]+)?: ", detail), v.reason
    if v.message_id is None:
        assert v.idempotency_key is None
    elif v.error_type == "too_large":  # found in the raw text, which is never parsed
        assert MESSAGE_ID.fullmatch(v.message_id)
    else:  # read from the envelope: exactly the producer's value
        sent = parse(raw)
        assert isinstance(sent, dict) and v.message_id == sent.get("message_id")
    if len(raw) <= S.max_message_bytes:
        assert v.error_type != "too_large"


def check_accepted(v: Accepted, sent: dict[str, Any]) -> None:
    env = v.envelope
    assert env.payload == sent["payload"]
    assert v.payload_sha256 == payload_hash(sent["payload"])
    assert env.message_id == sent["message_id"] and env.provider == sent["provider"]
    assert v.idempotency_key == idempotency_key(env.provider, env.account, env.message_id, 0)
    assert REPLY_TO.fullmatch(v.reply_to), v.reply_to
    # What the ledger (PostgreSQL json), httpx (allow_nan=False) and the result stream need:
    # strict JSON that is valid UTF-8.
    booking = v.booking()
    json.dumps(
        {"payload": booking.payload, "metadata": booking.metadata, "reply_to": booking.reply_to},
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    ResultMessage(
        message_id=env.message_id,
        idempotency_key=v.idempotency_key,
        provider=env.provider,
        account=env.account,
        generation=0,
        status="issued",
        attempts=1,
        metadata=env.metadata,
        completed_at=ledger.utcnow(),
    ).model_dump_json()


def check(fields: dict[Any, Any], raw: bytes | None) -> Accepted | Rejected:
    v = validate_entry(fields, S, ACCOUNTS)  # must not raise, whatever the input
    assert isinstance(v, Accepted | Rejected)
    if isinstance(v, Accepted):
        assert raw is not None
        check_accepted(v, json.loads(raw))
    else:
        check_rejected(v, raw or b"")
    return v


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(env=mutated_envelopes(), ascii_only=st.booleans(), str_key=st.booleans())
def test_mutated_envelopes_get_a_clear_answer(env: dict[str, Any], ascii_only: bool, str_key: bool) -> None:
    raw = encode(env, ascii_only)
    check({"message" if str_key else b"message": raw}, raw)


@FUZZ
@given(env=mutated_envelopes(ops=[op_odd_chars]), ascii_only=st.booleans())
def test_odd_characters_in_any_text_field(env: dict[str, Any], ascii_only: bool) -> None:
    raw = encode(env, ascii_only)
    check({b"message": raw}, raw)


@FUZZ
@given(env=mutated_envelopes(ops=[op_odd_key]), ascii_only=st.booleans())
def test_odd_keys_anywhere_are_never_echoed(env: dict[str, Any], ascii_only: bool) -> None:
    """NUL, surrogates, control characters and personal data in any key: a rejection names an
    unknown key by its position, never by its text."""
    raw = encode(env, ascii_only)
    check({b"message": raw}, raw)


@FUZZ
@given(env=mutated_envelopes(ops=[op_envelope_field, op_odd_chars]), ascii_only=st.booleans())
def test_odd_reply_to_message_id_and_metadata(env: dict[str, Any], ascii_only: bool) -> None:
    raw = encode(env, ascii_only)
    check({b"message": raw}, raw)


@FUZZ
@given(env=mutated_envelopes(ops=[op_bad_number]))
def test_odd_numbers_in_any_number_field(env: dict[str, Any]) -> None:
    raw = encode(env, True)
    check({b"message": raw}, raw)


@FUZZ
@given(raw=raw_messages)
def test_arbitrary_bytes_and_json_as_message_are_rejected_cleanly(raw: bytes) -> None:
    # Accepted only when it is a valid envelope after all (UTF-16 text is still JSON).
    check({b"message": raw}, raw)


@settings(max_examples=50, deadline=None)
@given(fields=no_message_fields)
def test_entries_without_a_message_field_are_rejected(fields: dict[Any, bytes]) -> None:
    v = check(fields, None)
    assert isinstance(v, Rejected) and v.error_type == "invalid_message" and v.message_id is None


@FUZZ
@given(
    provider=st.sampled_from(PROVIDERS),
    a=names,
    b=names,
    metadata=unicode_metadata,
    ascii_only=st.booleans(),
)
def test_unusual_but_valid_names_are_accepted_unchanged(
    provider: str, a: str, b: str, metadata: dict[str, str], ascii_only: bool
) -> None:
    env = with_names(provider, "fz-name", a, b, metadata)
    raw = encode(env, ascii_only)
    v = check({b"message": raw}, raw)
    assert isinstance(v, Accepted), v
    assert v.envelope.payload == env["payload"] and v.envelope.metadata == metadata


_mids = itertools.count()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(provider=st.sampled_from(PROVIDERS), a=names, b=names, metadata=unicode_metadata)
def test_unicode_round_trips_through_db_provider_and_result(
    database_url: str, provider: str, a: str, b: str, metadata: dict[str, str]
) -> None:
    """Unicode (NUL and control characters included) round-trips through the database (SQLite
    and PostgreSQL), the provider request and the callback unchanged."""
    sandbox = Sandbox(seed=1)
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            sent.append(json.loads(request.read()))
        return sandbox.handle(request)

    settings_ = Settings(database_url=database_url)
    accounts = sandbox_accounts("http://sandbox", settings_)

    def factory(account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(handler))

    deps = issuing.Deps(
        engine=make_engine(database_url),
        redis=fakeredis.FakeRedis(),
        settings=settings_,
        accounts=accounts,
        clients=issuing.ClientCache(factory),
    )
    env = with_names(provider, f"fz-rt-{next(_mids)}", a, b, metadata)
    v = validate_entry({b"message": encode(env, False)}, settings_, accounts)
    assert isinstance(v, Accepted), v
    assert ledger.create_queued(deps.engine, v.booking())

    stored = ledger.get(deps.engine, v.idempotency_key)
    assert stored is not None and stored.payload == env["payload"]
    assert stored.message_metadata == metadata

    issuing.process(deps, v.idempotency_key)
    row = ledger.get(deps.engine, v.idempotency_key)
    assert row is not None and row.status == "issued", (row and row.status, row and row.error_message)
    assert row.payload == env["payload"] and row.message_metadata == metadata
    assert len(sent) == 1 and names_of(provider, sent[0]) == names_of(provider, env["payload"])
    published: Any = deps.redis.xrange(v.reply_to)
    [result] = [json.loads(f[b"result"]) for _i, f in published]
    assert result["status"] == "issued" and result["metadata"] == metadata
    deps.engine.dispose()
