"""Intake when the broker cannot take the task: Celery's send_task raises kombu's
OperationalError (not a redis error) once its publish retries are spent. That is an outage,
not a bad entry: the entry stays pending and is accepted when the broker answers again."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from kombu.exceptions import OperationalError

from schemas.keys import idempotency_key
from tests.helpers import envelope
from worker import ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.settings import Settings, sandbox_accounts


class FlakyBroker:
    """An enqueue that fails like Celery does while the broker is unreachable, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.enqueued: list[str] = []

    def __call__(self, key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.enqueued.append(key)


def test_enqueue_failing_on_a_broker_outage_leaves_the_entry_pending(
    redis_client: redis.Redis, settings: Settings
) -> None:
    broker = FlakyBroker(failures=1)
    intake = Intake(
        redis_client,
        make_engine(settings.database_url),
        settings,
        sandbox_accounts("http://sandbox"),
        broker,
    )
    intake.ensure_group()
    redis_client.xadd("ticketrelay:bookings", {"message": json.dumps(envelope("eguma", "m-outage"))})
    with pytest.raises(OperationalError):
        intake.run_once()
    # Not dead-lettered, not acknowledged: the booking is still owed a task.
    assert redis_client.xrange("ticketrelay:dead") == []
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 1

    stop = threading.Event()
    t = threading.Thread(target=intake.run, args=(stop,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not broker.enqueued and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(5)
    key = idempotency_key("eguma", "default", "m-outage")
    assert broker.enqueued == [key]
    row = ledger.get(intake.engine, key)
    assert row is not None and row.status == "queued"
    assert redis_client.xrange("ticketrelay:dead") == []
    assert redis_client.xpending("ticketrelay:bookings", settings.intake_group)["pending"] == 0
