"""Bulk re-issuance against a real Redis and SQLite, with the in-process sandbox as provider:
selection, skipping, the original key finding a ticket that exists, resume, new generations."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from schemas.keys import idempotency_key
from tests.helpers import accept_booking, envelope
from worker import issuing, ledger
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.ops.reissue import ReissueRefused, Run, Selection
from worker.providers import build_client
from worker.settings import AccountConfig, Settings, sandbox_accounts
from worker.validation import payload_hash


class Harness:
    def __init__(self, sqlite_url: str, client: redis.Redis) -> None:
        self.sandbox = Sandbox(seed=3)
        self.settings = Settings(
            database_url=sqlite_url,
            reissue_window=5,
            backoff_base_s=0.01,
            backoff_cap_s=0.02,
            default_max_attempts=3,
        )
        self.accounts = sandbox_accounts("http://sandbox", self.settings)

        def factory(account: AccountConfig) -> httpx.Client:
            return build_client(account, transport=httpx.MockTransport(self.sandbox.handle))

        self.deps = issuing.Deps(
            engine=make_engine(sqlite_url),
            redis=client,
            settings=self.settings,
            accounts=self.accounts,
            clients=issuing.ClientCache(factory),
        )
        self.queue: list[str] = []
        self.enqueued: list[str] = []

    def enqueue(self, key: str) -> None:
        self.queue.append(key)
        self.enqueued.append(key)

    def accept(self, provider: str, mid: str, **payload_changes: Any) -> str:
        return accept_booking(self.deps.engine, provider, mid, **payload_changes)

    def work(self, key: str) -> str:
        """Run the issue task for `key` until its row is final, as workers would."""
        for _ in range(20):
            issuing.process(self.deps, key, bulk=True)
            row = ledger.get(self.deps.engine, key)
            assert row is not None
            if ledger.is_final(row):
                return row.status
            from sqlalchemy import update

            with self.deps.engine.begin() as conn:  # skip the backoff wait
                conn.execute(
                    update(ledger.T)
                    .where(ledger.C.idempotency_key == key)
                    .values(next_attempt_at=ledger.utcnow())
                )
        raise AssertionError("never final")

    def drain(self) -> None:
        while self.queue:
            self.work(self.queue.pop(0))

    def run(self, selection: Selection, run_id: str | None = None) -> Run:
        return Run(
            self.deps.engine, self.deps.redis, self.settings, self.enqueue, run_id=run_id, selection=selection
        )

    def creations(self, provider: str) -> dict[str, int]:
        out: dict[str, int] = self.sandbox.ground_truth()[provider]["creations"]
        return out


@pytest.fixture
def h(sqlite_url: str, redis_client: redis.Redis) -> Iterator[Harness]:
    yield Harness(sqlite_url, redis_client)


def _feed(run: Run, h: Harness, stop: threading.Event | None = None) -> bool:
    """Feed with a worker thread draining the queue, as a real deployment would."""
    done = threading.Event()

    def worker() -> None:
        while not done.is_set() or h.queue:
            if h.queue:
                h.work(h.queue.pop(0))
            else:
                done.wait(0.01)

    t = threading.Thread(target=worker)
    t.start()
    try:
        run.load_or_create()
        return run.feed(stop or threading.Event())
    finally:
        done.set()
        t.join(30)


def test_selection_skipping_and_the_original_key(h: Harness) -> None:
    # A: refused with 429s (never processed): failed, retryable, certainly no ticket.
    a = h.accept("eguma", "a")
    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 3)
    assert h.work(a) == "failed"
    # B: the ticket was created but the answer lost, then 429s: needs_review.
    b = h.accept("eguma", "b")
    h.sandbox.set_faults("eguma", fail_next=[{"kind": "drop_after_create"}, {"status": 429}, {"status": 429}])
    assert h.work(b) == "needs_review"
    assert h.creations("eguma")[b] == 1
    # C: issued. D: a permanent refusal (not retryable).
    c = h.accept("eguma", "c")
    assert h.work(c) == "issued"
    d = h.accept("remypass", "d")
    h.sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    assert h.work(d) == "failed"
    h.sandbox.set_faults("*")

    sel = Selection(statuses=["failed", "needs_review", "issued"], retryable_only=False)
    assert sum(h.run(sel).candidates_count().values()) == 4
    retryable = h.run(Selection(statuses=["failed"], retryable_only=True))
    assert retryable.candidates_count() == {("eguma", "failed"): 1}

    run = h.run(sel)
    assert _feed(run, h) is True
    assert sorted(h.enqueued) == sorted([a, b, d])  # C was issued: skipped
    assert run.skipped["skipped_issued"] == 1
    rows = {k: ledger.get(h.deps.engine, k) for k in (a, b, c, d)}
    assert rows[a].status == "issued" and rows[b].status == "issued"  # type: ignore[union-attr]
    assert rows[d].status == "issued"  # type: ignore[union-attr]  # the 400 was a one-off
    # B's ticket existed: the original key found it (e-guma replays), no second ticket.
    assert h.creations("eguma")[b] == 1 and h.creations("eguma")[a] == 1
    # Each drive got the account's full budget; `attempts` still counts every call.
    assert rows[a].attempts == 4 and rows[a].attempts_base == 3  # type: ignore[union-attr]
    report = run.finish(True)
    assert report["by_provider"] == {"eguma": {"issued": 2}, "remypass": {"issued": 1}}
    assert report["failures"] == [] and report["driven"] == 3
    assert report["skipped"] == {"skipped_issued": 1}


def test_stop_and_resume_without_duplicates_or_gaps(h: Harness) -> None:
    keys = []
    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 60)
    for i in range(20):
        keys.append(h.accept("eguma", f"r{i}"))
        assert h.work(keys[-1]) == "failed"
    h.sandbox.set_faults("eguma")
    first = h.run(Selection(statuses=["failed"]), run_id="night-1")
    stop = threading.Event()
    first.load_or_create()
    original_drive = first.drive

    def drive_then_stop(row: Any) -> str:
        out = original_drive(row)
        if len(h.enqueued) >= 3:  # mid-way through the first window
            stop.set()
        return out

    first.drive = drive_then_stop  # type: ignore[method-assign]
    assert first.feed(stop) is False
    first.finish(False)
    h.drain()
    driven_first = list(h.enqueued)
    assert 5 <= len(driven_first) < 20
    resumed = h.run(Selection(), run_id="night-1")
    assert resumed.load_or_create() is True  # the selection comes back from the database
    assert _feed(resumed, h) is True
    assert sorted(h.enqueued) == sorted(keys)  # every row once: no duplicate, no gap
    assert len(h.enqueued) == len(set(h.enqueued))
    assert all(ledger.get(h.deps.engine, k).status == "issued" for k in keys)  # type: ignore[union-attr]
    report = resumed.finish(True)
    assert report["by_provider"] == {"eguma": {"issued": 20}}


def test_new_generation_is_refused_where_unsafe_and_makes_a_new_key_where_safe(h: Harness) -> None:
    r = h.accept("remypass", "nr")
    e = h.accept("eguma", "ne")
    assert h.work(r) == "issued" and h.work(e) == "issued"
    unsafe = h.run(Selection(statuses=["issued"], new_generation=True))
    with pytest.raises(ReissueRefused, match="remypass"):
        unsafe.check_safe()
    safe = h.run(Selection(provider="eguma", statuses=["issued"], new_generation=True))
    safe.check_safe()
    assert _feed(safe, h) is True
    new_key = idempotency_key("eguma", "default", "ne", 1)
    assert h.enqueued == [new_key]
    assert ledger.get(h.deps.engine, new_key).status == "issued"  # type: ignore[union-attr]
    assert ledger.get(h.deps.engine, e).status == "issued"  # type: ignore[union-attr]  # untouched
    assert h.creations("eguma") == {e: 1, new_key: 1}  # deliberately a second ticket
    # Running the same run again (a resume) makes no third generation.
    again = h.run(Selection(provider="eguma", statuses=["issued"], new_generation=True), run_id=safe.run_id)
    again.load_or_create()
    assert again.feed(threading.Event()) is True
    assert h.enqueued == [new_key]


def test_producer_qr_codes_make_a_new_generation_unsafe(h: Harness) -> None:
    env = envelope("fourvenues_channels", "qr")
    env["payload"]["tickets"][0]["qr_code"] = "PRODUCER-CODE-1"
    key = idempotency_key("fourvenues_channels", "default", "qr")
    ledger.create_queued(
        h.deps.engine,
        ledger.NewBooking(
            idempotency_key=key,
            message_id="qr",
            provider="fourvenues_channels",
            account="default",
            generation=0,
            payload=env["payload"],
            payload_sha256=payload_hash(env["payload"]),
            reply_to="r",
            metadata={},
        ),
    )
    assert h.work(key) == "issued"
    with pytest.raises(ReissueRefused, match="qr_codes"):
        h.run(Selection(statuses=["issued"], new_generation=True)).check_safe()


def test_a_jsonl_export(h: Harness) -> None:
    issued = h.accept("eguma", "x-issued")
    assert h.work(issued) == "issued"
    failed = h.accept("eguma", "x-failed")
    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 3)
    assert h.work(failed) == "failed"
    h.sandbox.set_faults("eguma")
    changed = envelope("eguma", "x-issued")
    changed["payload"]["items"][0]["quantity"] = 9
    lines = [
        json.dumps(envelope("eguma", "x-issued")),
        json.dumps(envelope("eguma", "x-failed")),
        json.dumps(envelope("eguma", "x-new")),
        json.dumps(changed),
        "{broken",
        "",
    ]
    run = h.run(Selection())
    run.load_or_create()
    run.drive_envelopes(lines, h.accounts)
    h.drain()
    assert run.skipped == {
        "skipped_issued": 1,
        "redriven": 1,
        "created": 1,
        "skipped_different_payload": 1,
        "invalid_invalid_json": 1,
    }
    new = idempotency_key("eguma", "default", "x-new")
    assert sorted(h.enqueued) == sorted([failed, new])
    with h.deps.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger.T)).scalar_one() == 3
    assert ledger.get(h.deps.engine, failed).status == "issued"  # type: ignore[union-attr]


def test_selection_spec_and_schedule() -> None:
    from worker.app import _schedule

    sel = Selection.from_spec("status=failed,needs_review retryable=true since=24h provider=eguma")
    assert sel.statuses == ["failed", "needs_review"] and sel.retryable_only and sel.provider == "eguma"
    with pytest.raises(ValueError):
        Selection.from_spec("colour=blue")
    with pytest.raises(ValueError):
        Selection.from_spec("since=yesterday")
    nightly = _schedule(Settings(reissue_schedule="30 2 * * *"))["reissue-nightly"]
    assert nightly["task"] == "ticketrelay.reissue_nightly"
    assert nightly["schedule"].hour == {2} and nightly["schedule"].minute == {30}  # type: ignore[attr-defined]
    assert "reissue-nightly" not in _schedule(Settings(reissue_schedule="off"))
    with pytest.raises(ValueError):
        _schedule(Settings(reissue_schedule="3am"))


def test_a_running_run_shows_in_status_and_metrics(h: Harness, redis_url: str, sqlite_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from worker.ops.metrics import MetricsServer
    from worker.ops.status import collect

    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 6)
    keys = [h.accept("eguma", f"s{i}") for i in range(2)]
    for k in keys:
        assert h.work(k) == "failed"
    run = h.run(Selection(), run_id="visible-run")
    run.load_or_create()
    run.store.set_total(2)
    for row in run._next_batch(10):
        run.drive(row)
    settings = h.settings.model_copy(update={"redis_url": redis_url, "database_url": sqlite_url})
    [shown] = collect(settings)["reissue_runs"]
    assert shown["run_id"] == "visible-run" and shown["total"] == 2 and shown["by_status"] == {"queued": 2}
    server = MetricsServer(settings, "127.0.0.1", 0).start()
    try:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    samples = {
        (s.labels["run"], s.labels["status"]): s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "ticketrelay_reissue_run_bookings"
        for s in fam.samples
    }
    assert samples == {("visible-run", "total"): 2.0, ("visible-run", "queued"): 2.0}


def test_a_window_is_sent_as_batch_tasks(h: Harness) -> None:
    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 21)
    keys = [h.accept("eguma", f"w{i}") for i in range(7)]
    for key in keys:
        assert h.work(key) == "failed"
    h.sandbox.set_faults("eguma")
    batches: list[list[str]] = []

    def enqueue_many(ks: list[str]) -> None:
        batches.append(list(ks))
        h.queue.extend(ks)
        h.enqueued.extend(ks)

    run = Run(
        h.deps.engine,
        h.deps.redis,
        h.settings,
        lambda _k: pytest.fail("a window's keys go out through enqueue_many"),
        selection=Selection(statuses=["failed"]),
        enqueue_many=enqueue_many,
    )
    assert _feed(run, h) is True
    assert sorted(k for b in batches for k in b) == sorted(keys)  # each key once
    assert all(len(b) <= h.settings.reissue_window for b in batches) and len(batches) >= 2
    assert all(ledger.get(h.deps.engine, k).status == "issued" for k in keys)  # type: ignore[union-attr]


def test_limit_caps_the_rows_a_run_takes(h: Harness) -> None:
    h.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 15)
    keys = [h.accept("eguma", f"l{i}") for i in range(5)]
    for key in keys:
        assert h.work(key) == "failed"
    h.sandbox.set_faults("eguma")
    run = h.run(Selection(statuses=["failed"], limit=2))
    assert _feed(run, h) is True
    assert len(h.enqueued) == 2 and set(h.enqueued) <= set(keys)
    statuses = sorted(ledger.get(h.deps.engine, k).status for k in keys)  # type: ignore[union-attr]
    assert statuses == ["failed", "failed", "failed", "issued", "issued"]
    assert run.finish(True)["by_provider"] == {"eguma": {"issued": 2}}
