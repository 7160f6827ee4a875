"""Cancel envelopes at intake (CONTRACT.md 1.1): accepted with a key and a row of their own,
sent on the cancel task; malformed cancels rejected like any invalid envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from schemas.keys import idempotency_key
from tests.helpers import entry, envelope
from worker import ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, Rejected, validate_entry

ACCOUNTS = sandbox_accounts("http://sandbox")


def cancel_env(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"message_id": "C-1", "operation": "cancel", "cancels": "BK-1", "provider": "eguma"}
    env.update(changes)
    return env


def verdict(env: dict[str, Any]) -> Accepted | Rejected:
    return validate_entry(entry(env), Settings(), ACCOUNTS)


def test_a_cancel_is_accepted_with_its_own_key() -> None:
    ok = verdict(cancel_env())
    assert isinstance(ok, Accepted)
    assert ok.idempotency_key == idempotency_key("eguma", "default", "C-1", 0)
    booking = ok.booking()
    assert (booking.operation, booking.cancels, booking.payload) == ("cancel", "BK-1", None)


def test_a_resend_is_the_same_cancel_only_for_the_same_booking_and_options() -> None:
    base = verdict(cancel_env(provider="fourvenues"))
    same = verdict(cancel_env(provider="fourvenues"))
    other_booking = verdict(cancel_env(provider="fourvenues", cancels="BK-2"))
    other_amount = verdict(cancel_env(provider="fourvenues", payload={"amount": 5}))
    assert isinstance(base, Accepted) and isinstance(same, Accepted)
    assert isinstance(other_booking, Accepted) and isinstance(other_amount, Accepted)
    assert base.payload_sha256 == same.payload_sha256
    assert len({base.payload_sha256, other_booking.payload_sha256, other_amount.payload_sha256}) == 3


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (cancel_env(cancels=None), "cancels"),
        (cancel_env(cancels="C-1"), "message_id of its own"),
        (cancel_env(cancels="bad id!"), "cancels"),
        (cancel_env(operation="void"), "operation"),
        (cancel_env(payload={"amount": 5}), "unexpected: amount"),
        (cancel_env(provider="fourvenues", payload={"amount": 0}), "payload.amount: Input should be greater"),
        (cancel_env(provider="fourvenues_channels", payload={"amount": 5, "jane@x.org": 1}), "unknown field"),
        ({k: v for k, v in envelope("eguma", "BK-1").items() if k != "payload"}, "payload is required"),
        (envelope("eguma", "BK-1", cancels="BK-0"), "cancels is only for operation cancel"),
    ],
)
def test_malformed_cancels_are_rejected_with_a_reason(env: dict[str, Any], words: str) -> None:
    bad = verdict(env)
    assert isinstance(bad, Rejected)
    assert words in bad.reason
    assert "jane@x.org" not in bad.reason  # a producer's own key is never echoed


def test_an_issue_envelope_is_unchanged_by_the_new_fields() -> None:
    ok = verdict(envelope("eguma", "BK-1"))
    assert isinstance(ok, Accepted)
    assert (ok.booking().operation, ok.booking().cancels) == ("issue", None)
    explicit = verdict(envelope("eguma", "BK-1", operation="issue"))
    assert isinstance(explicit, Accepted) and explicit.payload_sha256 == ok.payload_sha256


def test_intake_sends_cancels_on_their_own_task(redis_client: redis.Redis, settings: Settings) -> None:
    issues: list[str] = []
    cancels: list[str] = []
    intake = Intake(
        redis_client,
        make_engine(settings.database_url),
        settings,
        ACCOUNTS,
        issues.append,
        enqueue_cancel=cancels.append,
    )
    intake.ensure_group()
    for env in (envelope("eguma", "BK-1"), cancel_env()):
        redis_client.xadd("ticketrelay:bookings", {"message": json.dumps(env)})
    while intake.run_once():
        pass

    booking_key = idempotency_key("eguma", "default", "BK-1")
    cancel_key = idempotency_key("eguma", "default", "C-1")
    assert issues == [booking_key] and cancels == [cancel_key]
    row = ledger.get(intake.engine, cancel_key)
    assert row is not None
    assert (row.operation, row.cancels, row.status) == ("cancel", "BK-1", "queued")
