"""Sample envelopes shared by the tests."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from worker import ledger
from worker.devtools.demo import demo_envelopes
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, validate_entry

CUSTOMER_EMAIL = "jane.secret-customer@example.com"
CUSTOMER_NAME = "Jane Secretcustomer"


def envelope(provider: str, message_id: str, **changes: Any) -> dict[str, Any]:
    """A valid envelope of `provider` carrying the test customer's personal data."""
    by_provider = {e["provider"]: e for e in demo_envelopes("t")}
    env = copy.deepcopy(by_provider[provider])
    env["message_id"] = message_id
    text = json.dumps(env).replace("demo.customer@example.com", CUSTOMER_EMAIL)
    text = text.replace("Demo Customer", CUSTOMER_NAME)
    env = json.loads(text)
    if provider == "remypass":
        env["payload"]["bookingId"] = f"BK-{message_id}"
    env.update(changes)
    return env


def entry(env: dict[str, Any] | str) -> dict[bytes, bytes]:
    text = env if isinstance(env, str) else json.dumps(env)
    return {b"message": text.encode()}


def accept_booking(engine: Engine, provider: str, mid: str, **payload_changes: Any) -> str:
    """Write the queued row intake would write for a valid envelope; returns its key."""
    env = envelope(provider, mid)
    env["payload"].update(payload_changes)
    verdict = validate_entry(entry(env), Settings(), sandbox_accounts("http://sandbox"))
    assert isinstance(verdict, Accepted), verdict
    ledger.create_queued(engine, verdict.booking())
    return verdict.idempotency_key


def wait_until(cond: Callable[[], Any], timeout: float = 10) -> None:
    """Poll `cond` every 50 ms until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
