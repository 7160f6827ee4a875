"""The webhook outbox on SQLite and PostgreSQL: idempotent enqueue in the caller's
transaction, leases, backoff until acknowledged, dead after the limits, replay and purge."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from schemas.result import ResultMessage
from worker.settings import AccountConfig, SecretStr
from worker.webhooks import outbox
from worker.webhooks.config import RetryPolicy

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URL = "https://hooks.example.com/ticketrelay"
POLICY = RetryPolicy(base_s=5.0, cap_s=60.0, max_attempts=4, max_age_s=3600.0)


def result(key: str | None = None, revision: int = 1, account: str = "default") -> ResultMessage:
    return ResultMessage(
        message_id="BK-1",
        idempotency_key=key or str(uuid.uuid4()),
        provider="eguma",
        account=account,
        generation=0,
        status="issued",
        attempts=1,
        provider_reference="R-1",
        completed_at=T0,
        revision=revision,
        metadata={"order": "42"},
    )


def add(engine: Engine, r: ResultMessage, url: str = URL, now: datetime = T0) -> bool:
    with engine.begin() as conn:
        return outbox.enqueue(conn, r, url, now=now)


def all_entries(engine: Engine) -> list[outbox.Entry]:
    return outbox.entries(engine, states=("pending", "dead", "delivered"), limit=1000)


def test_enqueue_is_idempotent_per_revision_and_url(engine: Engine) -> None:
    r = result()
    assert add(engine, r)
    assert not add(engine, r)  # a republish of the same revision
    assert not add(engine, r, now=T0 + timedelta(hours=1))
    assert add(engine, r, url=URL + "/other")
    r2 = r.model_copy(update={"revision": 2, "status": "failed"})
    assert add(engine, r2)
    got = {(e.revision, e.url): e for e in all_entries(engine)}
    assert len(got) == 3
    first, other, second = got[(1, URL)], got[(1, URL + "/other")], got[(2, URL)]
    # One id per result revision, the same for every URL; the body is the result's JSON.
    assert first.webhook_id == other.webhook_id == outbox.webhook_id_for(r.idempotency_key, 1)
    assert second.webhook_id != first.webhook_id and second.webhook_id.startswith("msg_")
    assert "." not in first.webhook_id
    assert first.body == r.model_dump_json().encode()
    assert ResultMessage.model_validate_json(second.body).status == "failed"


def test_enqueue_belongs_to_the_callers_transaction(engine: Engine) -> None:
    r = result()
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert outbox.enqueue(conn, r, URL, now=T0)
        raise RuntimeError("the publish transaction fails after the enqueue")
    assert all_entries(engine) == []
    assert add(engine, r)  # and a retry of the whole transaction queues it


def test_enqueue_results_only_for_accounts_with_a_callback_url(engine: Engine) -> None:
    accounts = {
        ("eguma", "default"): AccountConfig(
            provider="eguma",
            name="default",
            base_url="https://api.example",
            callback_url=URL,
            callback_secret=(SecretStr("whsec_" + "A" * 32),),
        ),
        ("eguma", "quiet"): AccountConfig(provider="eguma", name="quiet", base_url="https://api.example"),
    }
    rs = [result(), result(account="quiet"), result(account="unknown")]
    with engine.begin() as conn:
        assert outbox.enqueue_results(conn, accounts, rs, now=T0) == 1
    (entry,) = all_entries(engine)
    assert entry.idempotency_key == rs[0].idempotency_key and entry.account == "default"


def test_claim_takes_due_entries_under_a_lease(engine: Engine) -> None:
    keys = [result() for _ in range(3)]
    for i, r in enumerate(keys):
        add(engine, r, now=T0 + timedelta(seconds=i))
    assert outbox.claim_due(engine, 10, lease_s=60, now=T0 - timedelta(seconds=1)) == []  # none due yet
    first = outbox.claim_due(engine, 2, lease_s=60, now=T0 + timedelta(seconds=5))
    assert [e.idempotency_key for e in first] == [keys[0].idempotency_key, keys[1].idempotency_key]
    second = outbox.claim_due(engine, 10, lease_s=60, now=T0 + timedelta(seconds=6))
    assert [e.idempotency_key for e in second] == [keys[2].idempotency_key]  # the leased ones are skipped
    assert outbox.claim_due(engine, 10, lease_s=60, now=T0 + timedelta(seconds=30)) == []
    # A deliverer that died: its lease ends and the entries are due again, for a new holder.
    again = outbox.claim_due(engine, 10, lease_s=60, now=T0 + timedelta(seconds=70))
    assert {e.id for e in again} == {e.id for e in first + second}
    assert {e.lease_owner for e in again}.isdisjoint({e.lease_owner for e in first + second})
    # The old holder lost its lease: it records nothing.
    late = T0 + timedelta(seconds=71)
    assert outbox.mark_retry(engine, first[0], POLICY, 500, "HTTP 500", now=late) is None
    assert outbox.release(engine, first[0]) is False


def test_two_deliverers_never_claim_the_same_entry(engine: Engine) -> None:
    for _ in range(60):
        add(engine, result())
    claimed: list[list[outbox.Entry]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        mine: list[outbox.Entry] = []
        while batch := outbox.claim_due(engine, 7, lease_s=60, now=T0 + timedelta(seconds=1)):
            mine += batch
        with lock:
            claimed.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [e.id for mine in claimed for e in mine]
    assert len(ids) == 60 and len(set(ids)) == 60


def test_retry_backs_off_with_full_jitter_until_acknowledged(engine: Engine) -> None:
    add(engine, result())
    now = T0
    rng = random.Random(7)
    for attempt in (1, 2, 3):
        (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=now)
        assert entry.attempts == attempt - 1
        assert outbox.mark_retry(engine, entry, POLICY, 503, "HTTP 503", now=now, rng=rng) == "retry"
        (stored,) = all_entries(engine)
        ceiling = min(POLICY.cap_s, POLICY.base_s * 2 ** (attempt - 1))
        assert now <= stored.next_attempt_at <= now + timedelta(seconds=ceiling)
        assert (stored.attempts, stored.last_status, stored.last_error) == (attempt, 503, "HTTP 503")
        assert stored.lease_owner is None and stored.state == "pending"
        if stored.next_attempt_at > now:
            assert outbox.claim_due(engine, 10, lease_s=60, now=now) == []  # not before it is due
        now = stored.next_attempt_at
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=now)
    assert outbox.mark_delivered(engine, entry, 204, now=now)
    (stored,) = all_entries(engine)
    assert stored.state == "delivered" and stored.attempts == 4 and stored.last_status == 204
    assert stored.last_error is None
    assert outbox.claim_due(engine, 10, lease_s=60, now=now + timedelta(days=1)) == []
    assert not outbox.mark_delivered(engine, entry, 200, now=now)  # the first answer counts


def test_retry_after_is_a_floor_and_the_cap_holds(engine: Engine) -> None:
    add(engine, result())
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=T0)
    outbox.mark_retry(engine, entry, POLICY, 429, "HTTP 429", retry_after_s=40, now=T0)
    (stored,) = all_entries(engine)
    assert stored.next_attempt_at >= T0 + timedelta(seconds=40)
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=stored.next_attempt_at)
    outbox.mark_retry(engine, entry, POLICY, 429, "HTTP 429", retry_after_s=86400, now=T0)
    (stored,) = all_entries(engine)
    assert stored.next_attempt_at == T0 + timedelta(seconds=POLICY.cap_s)


def test_dead_after_max_attempts_then_replayed_with_the_same_id(engine: Engine) -> None:
    r = result()
    add(engine, r)
    now = T0
    outcomes = []
    for _ in range(POLICY.max_attempts):
        (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=now)
        outcomes.append(outbox.mark_retry(engine, entry, POLICY, None, "timeout after 10s", now=now))
        now += timedelta(seconds=POLICY.cap_s)
    assert outcomes == ["retry"] * (POLICY.max_attempts - 1) + ["dead"]
    (dead,) = all_entries(engine)
    assert dead.state == "dead" and dead.attempts == POLICY.max_attempts
    assert outbox.claim_due(engine, 10, lease_s=60, now=now + timedelta(days=30)) == []
    assert outbox.counts(engine)["dead"] == 1

    later = now + timedelta(days=2)
    assert outbox.replay(engine, states=("dead",), now=later) == 1
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=later)
    assert (entry.webhook_id, entry.body, entry.attempts) == (dead.webhook_id, dead.body, 0)
    assert entry.replayed_at == later
    # The replay gets a fresh window too: not dead at once although created days ago.
    assert outbox.mark_retry(engine, entry, POLICY, 500, "HTTP 500", now=later) == "retry"


def test_dead_after_max_age(engine: Engine) -> None:
    add(engine, result())
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=T0)
    # A long Retry-After is cut at the deadline, so the last attempt still happens.
    policy = RetryPolicy(base_s=5.0, cap_s=7200.0, max_attempts=100, max_age_s=600.0)
    assert outbox.mark_retry(engine, entry, policy, 503, "HTTP 503", retry_after_s=7200, now=T0) == "retry"
    (stored,) = all_entries(engine)
    assert stored.next_attempt_at == T0 + timedelta(seconds=600)
    (entry,) = outbox.claim_due(engine, 10, lease_s=60, now=stored.next_attempt_at)
    assert outbox.mark_retry(engine, entry, policy, 503, "HTTP 503", now=stored.next_attempt_at) == "dead"


def test_replay_by_key_and_of_delivered_entries_and_purge(engine: Engine) -> None:
    a, b, c = result(), result(), result()
    for r in (a, b, c):
        add(engine, r)
    by_key = {e.idempotency_key: e for e in outbox.claim_due(engine, 10, lease_s=60, now=T0)}
    outbox.mark_delivered(engine, by_key[a.idempotency_key], 200, now=T0)
    outbox.mark_dead(engine, by_key[b.idempotency_key], 410, "HTTP 410 Gone", now=T0)
    outbox.release(engine, by_key[c.idempotency_key])
    assert outbox.counts(engine) | {"oldest_pending_s": 0} == {
        "pending": 1,
        "dead": 1,
        "delivered": 1,
        "oldest_pending_s": 0,
    }
    with pytest.raises(ValueError):
        outbox.replay(engine, states=("delivered",))  # no selection: refused, not "everything"
    # A delivered one is replayed only when asked for by key (or id) and state.
    assert outbox.replay(engine, key=a.idempotency_key, states=("dead",)) == 0
    assert outbox.replay(engine, key=a.idempotency_key, states=("delivered",), now=T0) == 1
    assert {e.idempotency_key for e in outbox.entries(engine, states=("pending",))} == {
        a.idempotency_key,
        c.idempotency_key,
    }
    # Purge: delivered and dead entries older than the cut; pending ones never.
    (entry,) = outbox.claim_due(engine, 1, lease_s=60, now=T0)
    outbox.mark_delivered(engine, entry, 200, now=T0)
    assert outbox.purge(engine, delivered_before=T0, dead_before=None) == 0
    assert outbox.purge(engine, delivered_before=T0 + timedelta(seconds=1), dead_before=None) == 1
    assert outbox.purge(engine, delivered_before=None, dead_before=T0 + timedelta(seconds=1)) == 1
    much_later = T0 + timedelta(days=9)
    assert outbox.purge(engine, delivered_before=much_later, dead_before=much_later) == 0
    (left,) = all_entries(engine)
    assert left.state == "pending"
    with engine.connect() as conn:
        assert conn.execute(select(outbox.C.id)).scalars().all() == [left.id]
