"""The metrics exporter on a real Redis and a real SQLite file, scraped over real HTTP: SQL gauges,
Redis depths, and event metrics recorded in-process, flushed to Redis and read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import fakeredis
import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, update

from schemas.keys import idempotency_key
from schemas.result import ResultError
from tests.conftest import free_port
from tests.helpers import entry, envelope
from worker import issuing, ledger, metrics
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.devtools.supervisor import child_env
from worker.intake import Intake
from worker.ops.metrics import MetricsServer
from worker.providers import build_client
from worker.providers.base import Outcome, OutcomeKind
from worker.settings import AccountConfig, Settings, sandbox_accounts
from worker.validation import payload_hash

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def msettings(settings: Settings) -> Settings:
    # A hash of its own: a flush left over from another test can never add to this one.
    return settings.model_copy(update={"metrics_key": f"test:metrics:{uuid.uuid4().hex}"})


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> metrics.Recorder:
    # A private buffer without its thread, flushed by the test: deterministic.
    rec = metrics.Recorder(start_thread=False)
    monkeypatch.setattr(metrics, "_recorder", rec)
    return rec


@pytest.fixture
def server(msettings: Settings) -> Iterator[MetricsServer]:
    srv = MetricsServer(msettings, "127.0.0.1", 0).start()
    yield srv
    srv.stop()


@pytest.fixture
def mengine(msettings: Settings) -> Iterator[Engine]:
    eng = make_engine(msettings.database_url)
    yield eng
    eng.dispose()


def booking(provider: str, mid: str, account: str = "default") -> ledger.NewBooking:
    return ledger.NewBooking(
        idempotency_key=idempotency_key(provider, account, mid),
        message_id=mid,
        provider=provider,
        account=account,
        generation=0,
        payload={"x": 1},
        payload_sha256=payload_hash({"x": 1}),
        reply_to="ticketrelay:results",
        metadata={},
    )


def outcome(kind: OutcomeKind, error_type: str | None = None) -> Outcome:
    error = ResultError(type=error_type, message="m") if error_type else None
    return Outcome(kind=kind, error=error)


def test_health_and_not_found(server: MetricsServer) -> None:
    resp = httpx.get(f"{server.url}/healthz")
    assert (resp.status_code, resp.text) == (200, "ok")
    assert httpx.get(f"{server.url}/nothing").status_code == 404


def test_bookings_by_status_and_oldest_unfinished_age(server: MetricsServer, mengine: Engine) -> None:
    for i in range(3):
        assert ledger.create_queued(mengine, booking("eguma", f"q{i}"))
    assert ledger.create_queued(mengine, booking("remypass", "r1"))
    issued = ledger.get(mengine, booking("remypass", "r1").idempotency_key)
    assert issued is not None and ledger.claim(mengine, issued, "tok", 60)
    assert ledger.record_issued(mengine, issued.idempotency_key, "tok", [], "ref")
    # A rejected message names an account that is not configured: never a label of its own.
    error = ResultError(type="unknown_account", message="no such account")
    assert ledger.create_rejected(mengine, booking("eguma", "bad", account="jane-doe-1980"), error)
    with mengine.begin() as conn:  # the oldest queued booking was accepted 30 s ago
        old = ledger.utcnow() - timedelta(seconds=30)
        key = booking("eguma", "q0").idempotency_key
        conn.execute(update(ledger.T).where(ledger.C.idempotency_key == key).values(created_at=old))

    samples = scrape(server.url)

    def bookings(provider: str, account: str, status: str) -> float | None:
        return value(samples, "ticketrelay_bookings", provider=provider, account=account, status=status)

    assert bookings("eguma", "default", "queued") == 3
    assert bookings("eguma", "default", "issued") == 0  # zeros for every configured account
    assert bookings("remypass", "default", "issued") == 1
    assert bookings("remypass", "default", "queued") == 0
    assert bookings("eguma", "other", "rejected") == 1
    assert not any("jane" in str(labels) for _name, labels in samples)
    eguma_age = value(samples, "ticketrelay_oldest_unfinished_booking_age_seconds", provider="eguma")
    assert eguma_age is not None and 29 <= eguma_age < 120
    assert value(samples, "ticketrelay_oldest_unfinished_booking_age_seconds", provider="remypass") == 0
    assert value(samples, "ticketrelay_exporter_source_up", source="database") == 1
    assert value(samples, "ticketrelay_exporter_source_up", source="redis") == 1


def test_event_metrics_from_two_processes_add_up(
    server: MetricsServer,
    msettings: Settings,
    redis_client: redis.Redis,
    recorder: metrics.Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other_process = metrics.Recorder(start_thread=False)
    metrics.provider_call(redis_client, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.03)
    metrics.provider_call(redis_client, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.02)
    metrics.provider_call(
        redis_client, msettings, "eguma", "default", outcome(OutcomeKind.RETRY, "timeout"), 0.7
    )
    metrics.provider_call(
        redis_client, msettings, "remypass", "default", outcome(OutcomeKind.FAILED, "auth_error"), 75.0
    )
    metrics.dead_letter(redis_client, msettings, "invalid_json")
    assert recorder.flush()
    monkeypatch.setattr(metrics, "_recorder", other_process)
    metrics.provider_call(redis_client, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.2)
    metrics.dead_letter(redis_client, msettings, "invalid_json")
    metrics.dead_letter(redis_client, msettings, "not a safe label: jane@example.com")
    assert other_process.flush()

    s = scrape(server.url)
    h = "ticketrelay_provider_call_duration_seconds"
    issued = {"provider": "eguma", "outcome": "issued"}
    assert value(s, f"{h}_bucket", le="0.01", **issued) == 0
    assert value(s, f"{h}_bucket", le="0.025", **issued) == 1
    assert value(s, f"{h}_bucket", le="0.05", **issued) == 2
    assert value(s, f"{h}_bucket", le="0.25", **issued) == 3
    assert value(s, f"{h}_bucket", le="+Inf", **issued) == 3
    assert value(s, f"{h}_count", **issued) == 3
    assert value(s, f"{h}_sum", **issued) == pytest.approx(0.25)
    assert value(s, f"{h}_count", provider="eguma", outcome="retry") == 1
    assert value(s, f"{h}_bucket", le="60.0", provider="remypass", outcome="failed") == 0
    assert value(s, f"{h}_bucket", le="+Inf", provider="remypass", outcome="failed") == 1
    calls = "ticketrelay_provider_calls_total"
    assert value(s, calls, provider="eguma", account="default", outcome="issued") == 3
    assert value(s, calls, provider="remypass", account="default", outcome="failed") == 1
    retries = "ticketrelay_provider_retries_total"
    assert value(s, retries, provider="eguma", error_type="timeout") == 1
    assert value(s, retries, provider="remypass", error_type="auth_error") is None
    assert value(s, "ticketrelay_dead_letters_total", error_type="invalid_json") == 2
    assert value(s, "ticketrelay_dead_letters_total", error_type="other") == 1


def test_queue_and_stream_depths(
    server: MetricsServer, msettings: Settings, redis_client: redis.Redis
) -> None:
    s = msettings
    redis_client.lpush(s.queue, "a", "b", "c")
    redis_client.lpush(f"{s.queue}\x06\x169", "urgent")  # kombu's list for priority 9
    redis_client.hset("unacked", mapping={"tag1": "m", "tag2": "m"})
    for i in range(5):
        redis_client.xadd(s.intake_stream, {"message": str(i)})
    redis_client.xgroup_create(s.intake_stream, s.intake_group, id="0")
    redis_client.xreadgroup(s.intake_group, "c1", {s.intake_stream: ">"}, count=3)
    redis_client.xadd(s.results_stream, {"result": "{}"})
    redis_client.xadd(s.dead_stream, {"dead_reason": "x"})
    redis_client.xadd(s.dead_stream, {"dead_reason": "y"})

    samples = scrape(server.url)
    assert value(samples, "ticketrelay_celery_queue_length", queue=s.queue) == 4
    assert value(samples, "ticketrelay_celery_unacked_messages") == 2
    assert value(samples, "ticketrelay_intake_stream_length") == 5
    assert value(samples, "ticketrelay_intake_pending_entries") == 3
    assert value(samples, "ticketrelay_intake_lag_entries") == 2
    assert value(samples, "ticketrelay_results_stream_length") == 1
    assert value(samples, "ticketrelay_dead_letter_stream_length") == 2


def test_empty_stores_scrape_cleanly(server: MetricsServer) -> None:
    samples = scrape(server.url)
    assert value(samples, "ticketrelay_intake_pending_entries") == 0  # no stream, no group yet
    assert value(samples, "ticketrelay_celery_queue_length", queue="ticketrelay") == 0
    assert value(samples, "ticketrelay_bookings", provider="eguma", account="default", status="queued") == 0


class FlakyRedis:
    """A real client whose first pipelines fail as if Redis were down."""

    def __init__(self, client: redis.Redis, failures: int) -> None:
        self.client, self.failures = client, failures

    def pipeline(self, transaction: bool = True) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise redis.ConnectionError("Redis is down")
        return self.client.pipeline(transaction=transaction)


def test_redis_down_keeps_events_for_a_later_flush_and_never_raises(
    server: MetricsServer, msettings: Settings, redis_client: redis.Redis, recorder: metrics.Recorder
) -> None:
    flaky = FlakyRedis(redis_client, failures=2)
    metrics.provider_call(flaky, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.1)
    assert recorder.flush() is False
    metrics.provider_call(flaky, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.1)
    assert recorder.flush() is False
    assert recorder.flush() is True
    s = scrape(server.url)
    assert (
        value(s, "ticketrelay_provider_calls_total", provider="eguma", account="default", outcome="issued")
        == 2
    )

    # A Redis that does not answer at all: recording still returns at once and never raises.
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    started = time.perf_counter()
    metrics.provider_call(dead, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.1)
    metrics.dead_letter(dead, msettings, "invalid_json")
    assert time.perf_counter() - started < 0.05
    assert recorder.flush() is False
    # And a broken argument is swallowed too.
    metrics.provider_call(redis_client, msettings, "eguma", "default", None, 0.1)  # type: ignore[arg-type]


def test_exporter_with_redis_down_still_serves_sql(msettings: Settings, mengine: Engine) -> None:
    assert ledger.create_queued(mengine, booking("eguma", "q1"))
    down = msettings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    srv = MetricsServer(down, "127.0.0.1", 0).start()
    try:
        samples = scrape(srv.url)
    finally:
        srv.stop()
    assert value(samples, "ticketrelay_exporter_source_up", source="redis") == 0
    assert value(samples, "ticketrelay_exporter_source_up", source="database") == 1
    assert value(samples, "ticketrelay_bookings", provider="eguma", account="default", status="queued") == 1
    assert value(samples, "ticketrelay_celery_queue_length", queue=msettings.queue) is None


def test_issue_task_and_intake_are_instrumented(
    server: MetricsServer, msettings: Settings, mengine: Engine, redis_client: redis.Redis, recorder: Any
) -> None:
    sandbox = Sandbox(seed=1)
    accounts = sandbox_accounts("http://sandbox", msettings)

    def factory(account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(sandbox.handle))

    deps = issuing.Deps(mengine, redis_client, msettings, accounts, issuing.ClientCache(factory))
    enqueued: list[str] = []
    intake = Intake(redis_client, mengine, msettings, accounts, enqueue=enqueued.append)
    intake.ensure_group()
    keys = []
    for i, provider in enumerate(["eguma", "remypass"]):
        redis_client.xadd(msettings.intake_stream, entry(envelope(provider, f"m{i}")))
        keys.append(idempotency_key(provider, "default", f"m{i}"))
    redis_client.xadd(msettings.intake_stream, {b"message": b"{not json"})
    assert intake.run_once() == 3
    assert enqueued == keys  # the two valid ones accepted; the third rejected
    for key in keys:
        issuing.process(deps, key)
    assert recorder.flush()

    s = scrape(server.url)
    for provider in ("eguma", "remypass"):
        labels = {"provider": provider, "outcome": "issued"}
        assert value(s, "ticketrelay_provider_call_duration_seconds_count", **labels) == 1
        assert value(s, "ticketrelay_bookings", provider=provider, account="default", status="issued") == 1
    assert value(s, "ticketrelay_dead_letters_total", error_type="invalid_json") == 1
    assert value(s, "ticketrelay_dead_letter_stream_length") == 1


def test_recording_goes_to_the_client_it_is_given(recorder: metrics.Recorder, msettings: Settings) -> None:
    # Unit tests give the issue task a fakeredis: its events must land there, nowhere else.
    fake = fakeredis.FakeRedis()
    metrics.provider_call(fake, msettings, "eguma", "default", outcome(OutcomeKind.ISSUED), 0.1)
    assert recorder.flush()
    assert fake.hgetall(msettings.metrics_key)


def test_main_serves_on_the_configured_port_and_stops_on_sigterm(msettings: Settings) -> None:
    port = free_port()
    env = child_env(
        {
            "TICKETRELAY_REDIS_URL": msettings.redis_url,
            "TICKETRELAY_DATABASE_URL": msettings.database_url,
            "TICKETRELAY_METRICS_PORT": str(port),
            "TICKETRELAY_METRICS_KEY": msettings.metrics_key,
        }
    )
    env.pop("TICKETRELAY_ACCOUNTS_FILE", None)
    env.pop("TICKETRELAY_METRICS_HOST", None)
    proc = subprocess.Popen([sys.executable, "-m", "worker.ops.metrics_server"], env=env, cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "the exporter exited"
                assert time.monotonic() < deadline, "the exporter never listened"
                time.sleep(0.1)
        assert resp.text == "ok"
        assert "ticketrelay_bookings" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_and_metrics_read_the_same_queue_depths(
    server: MetricsServer, msettings: Settings, redis_client: redis.Redis
) -> None:
    from worker.ops.status import collect

    s = msettings
    redis_client.lpush(s.queue, "a", "b")
    redis_client.lpush(f"{s.queue}\x06\x163", "prio-3")  # kombu's list for priority 3
    redis_client.lpush(s.bulk_queue, "bulk-1", "bulk-2", "bulk-3")
    redis_client.hset("unacked", mapping={"tag1": "m"})
    shown = collect(s)["redis"]
    samples = scrape(server.url)
    assert shown["celery_queue"] == value(samples, "ticketrelay_celery_queue_length", queue=s.queue) == 3
    assert shown["bulk_queue"] == value(samples, "ticketrelay_celery_queue_length", queue=s.bulk_queue) == 3
    assert shown["unacked"] == value(samples, "ticketrelay_celery_unacked_messages") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_collector_reads_the_stores_at_most_once_per_cache_period(
    msettings: Settings, mengine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from worker.ops.metrics.collector import TicketrelayCollector

    reads: list[int] = []
    real = ledger.booking_groups

    def counted(engine: Engine) -> list[ledger.BookingGroup]:
        reads.append(1)
        return real(engine)

    monkeypatch.setattr(ledger, "booking_groups", counted)
    clock = Clock()
    collector = TicketrelayCollector(
        msettings, mengine, redis_client, [("eguma", "default")], cache_s=5.0, clock=clock
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def queued() -> float:
        for fam in text_string_to_metric_families(generate_latest(registry).decode()):
            for smp in fam.samples:
                if smp.name == "ticketrelay_bookings" and smp.labels["status"] == "queued":
                    return smp.value
        raise AssertionError("no ticketrelay_bookings")

    assert ledger.create_queued(mengine, booking("eguma", "c1"))
    assert queued() == 1
    assert ledger.create_queued(mengine, booking("eguma", "c2"))
    clock.now += 4.9
    assert [queued() for _ in range(10)] == [1] * 10  # ten scrapes, the same snapshot
    assert len(reads) == 1
    clock.now += 0.2
    assert queued() == 2
    assert len(reads) == 2


def test_the_cache_period_is_a_setting(msettings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETRELAY_METRICS_CACHE_S", "7.5")
    assert Settings().metrics_cache_s == 7.5
    srv = MetricsServer(msettings.model_copy(update={"metrics_cache_s": 7.5}), "127.0.0.1", 0)
    try:
        assert srv.collector.cache_s == 7.5
    finally:
        srv.httpd.server_close()
        srv.engine.dispose()
    monkeypatch.delenv("TICKETRELAY_METRICS_CACHE_S")
    srv = MetricsServer(msettings, "127.0.0.1", 0)
    try:
        assert srv.collector.cache_s == 5.0
    finally:
        srv.httpd.server_close()
        srv.engine.dispose()
