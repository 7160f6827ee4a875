"""The exporter's collector: builds every ticketrelay_* metric from the shared stores.

The numbers are the same whatever the number of worker and intake processes, hosts, or
exporters (run one, or two for availability: they answer alike):

- SQL (the truth): one GROUP BY over ticket_issuances (worker.ledger.booking_groups) gives the
  bookings by provider, account and status and, per group, the oldest `created_at`, hence the
  age of the oldest unfinished booking. One query, one scan.
- Redis: the depths of the Celery queues, the intake stream and its group, the results and
  dead-letter streams (worker.queues, as `ticketrelay status` reads them), and the event
  counters that every process adds into the hash `metrics_key` (worker/metrics.py).

A snapshot of the stores is kept for TICKETRELAY_METRICS_CACHE_S seconds (default 5): scrapes
from several Prometheus servers, or a scrape storm, read the database at most once per period,
and never two at a time. A store that does not answer is reported as
`ticketrelay_exporter_source_up{source=...} 0`, and the other store's metrics are still served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from schemas.envelope import PROVIDERS
from schemas.statuses import ACTIVE_STATUSES, Status
from worker import ledger
from worker.metrics import CALL_BUCKET, CALL_BUCKETS, CALL_SUM, CALLS, DEAD_LETTERS, RETRIES, build_info
from worker.ops.reissue import running_runs
from worker.queues import Depths, read_depths
from worker.settings import Settings

log = logging.getLogger("ticketrelay.metrics")


@dataclass
class SqlSnapshot:
    # (provider, account, status) -> (count, oldest created_at)
    groups: dict[tuple[str, str, str], tuple[int, datetime | None]]
    now: datetime
    running: list[dict[str, Any]] | None = None  # None: reissue_runs unreadable


@dataclass
class Snapshot:
    sql: SqlSnapshot | None
    redis: Depths | None
    events: dict[str, float] = field(default_factory=dict)
    memory: tuple[int, int] | None = None  # Redis INFO memory: (used_memory, maxmemory)


class TicketrelayCollector(Collector):
    """Builds every ticketrelay_* metric from a snapshot at most `cache_s` old (thread-safe:
    scrapes may overlap; one of them reads the stores, the others wait for its snapshot)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: redis.Redis,
        accounts: Iterable[tuple[str, str]],
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        # Label values come only from configuration: a rejected row's account is whatever the
        # producer sent, so it is reported as "other" unless it is a configured account.
        self.accounts = frozenset(accounts)
        self.cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0

    def describe(self) -> list[Metric]:
        return []  # not known before a scrape; keeps registration from querying the stores

    # --- reading the stores ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self._clock()
            if self._snapshot is None or now - self._taken_at >= self.cache_s:
                self._snapshot = self.read()
                self._taken_at = self._clock()
            return self._snapshot

    def read(self) -> Snapshot:
        try:
            sql: SqlSnapshot | None = self.read_sql()
        except Exception as exc:
            log.warning("metrics: database unreadable: %s", type(exc).__name__, extra={"event": "metrics_db"})
            sql = None
        try:
            depths: Depths | None = read_depths(self.client, self.settings)
            events = self.read_events()
        except Exception as exc:
            log.warning("metrics: redis unreadable: %s", type(exc).__name__, extra={"event": "metrics_redis"})
            depths, events = None, {}
        memory = self.read_memory() if depths is not None else None
        return Snapshot(sql=sql, redis=depths, events=events, memory=memory)

    def read_memory(self) -> tuple[int, int] | None:
        """Redis's used memory and its limit, or None where INFO is refused (a managed Redis
        may not allow it): the queue and stream metrics do not depend on it."""
        try:
            info: Any = self.client.info("memory")
            return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        except (redis.ResponseError, ValueError, TypeError) as exc:
            log.warning(
                "metrics: redis INFO memory refused: %s", type(exc).__name__, extra={"event": "metrics_redis"}
            )
            return None

    def read_events(self) -> dict[str, float]:
        events: dict[str, float] = {}
        raw: Any = self.client.hgetall(self.settings.metrics_key)
        for name, value in raw.items():
            with contextlib.suppress(ValueError):
                events[name.decode() if isinstance(name, bytes) else str(name)] = float(value)
        return events

    def read_sql(self) -> SqlSnapshot:
        groups: dict[tuple[str, str, str], tuple[int, datetime | None]] = {}
        for g in ledger.booking_groups(self.engine):
            labels = self._booking_labels(g.provider, g.account, g.status)
            prev_n, prev_oldest = groups.get(labels, (0, None))
            oldest = g.oldest_created_at
            if prev_oldest is not None and (oldest is None or prev_oldest < oldest):
                oldest = prev_oldest
            groups[labels] = (prev_n + g.count, oldest)
        running: list[dict[str, Any]] | None = None
        with contextlib.suppress(Exception):  # a missing table must not cost the rest
            running = running_runs(self.engine)
        return SqlSnapshot(groups=groups, now=ledger.utcnow(), running=running)

    def _booking_labels(self, provider: str, account: str, status: str) -> tuple[str, str, str]:
        if (provider, account) not in self.accounts:
            account = "other"
        if provider not in PROVIDERS:
            provider = "other"
        if status not in set(Status):
            status = "other"
        return provider, account, status

    # --- building the metrics ----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        up = GaugeMetricFamily(
            "ticketrelay_exporter_source_up",
            "1 when the exporter could read this store (redis, database) at its last read, at most "
            "TICKETRELAY_METRICS_CACHE_S ago, else 0.",
            labels=["source"],
        )
        up.add_metric(["database"], 1 if snap.sql is not None else 0)
        up.add_metric(["redis"], 1 if snap.redis is not None else 0)
        yield up
        yield build_info()
        if snap.sql is not None:
            yield from self._sql_metrics(snap.sql)
            if snap.sql.running is not None:
                yield self._reissue_metric(snap.sql.running)
        if snap.redis is not None:
            yield from self._redis_metrics(snap.redis)
            yield from self._event_metrics(snap.events)
        if snap.memory is not None:
            yield from self._memory_metrics(*snap.memory)

    def _sql_metrics(self, sql: SqlSnapshot) -> Iterator[Metric]:
        bookings = GaugeMetricFamily(
            "ticketrelay_bookings",
            "Bookings in ticket_issuances (the truth) by provider, account and status. Accounts "
            'not configured are reported as account="other".',
            labels=["provider", "account", "status"],
        )
        # Every status of every configured account, zeros included, so that series exist from
        # the start and rate()/alerts do not see them appear.
        pairs = set(self.accounts) | {(p, a) for p, a, _s in sql.groups}
        for provider, account in sorted(pairs):
            for st in Status:
                n, _ = sql.groups.get((provider, account, st.value), (0, None))
                bookings.add_metric([provider, account, st.value], n)
        yield bookings

        oldest = GaugeMetricFamily(
            "ticketrelay_oldest_unfinished_booking_age_seconds",
            "Age of the oldest booking not yet final (queued, in_progress or retrying), by provider; "
            "0 when there is none. max() over providers gives the overall oldest.",
            labels=["provider"],
        )
        by_provider: dict[str, float] = {p: 0.0 for p, _a in pairs}
        for (provider, _account, status), (_n, created) in sql.groups.items():
            if status in ACTIVE_STATUSES and created is not None:
                age = max(0.0, (sql.now - created).total_seconds())
                by_provider[provider] = max(by_provider.get(provider, 0.0), age)
        for provider, age in sorted(by_provider.items()):
            oldest.add_metric([provider], round(age, 3))
        yield oldest

    def _reissue_metric(self, running: list[dict[str, Any]]) -> Metric:
        runs = GaugeMetricFamily(
            "ticketrelay_reissue_run_bookings",
            'Bookings of each running bulk re-issuance by status; status="total" is what the run selected.',
            labels=["run", "status"],
        )
        for run in running:
            runs.add_metric([run["run_id"], "total"], run["total"])
            for status, n in sorted(run["by_status"].items()):
                runs.add_metric([run["run_id"], status], n)
        return runs

    def _redis_metrics(self, r: Depths) -> Iterator[Metric]:
        s = self.settings
        queue = GaugeMetricFamily(
            "ticketrelay_celery_queue_length",
            "Issue and sweep tasks waiting in the Celery queue (Redis lists of every priority).",
            labels=["queue"],
        )
        for name in (s.queue, s.bulk_queue):
            queue.add_metric([name], r.queues.get(name, 0))
        yield queue
        yield GaugeMetricFamily(
            "ticketrelay_celery_unacked_messages",
            "Celery messages delivered to a worker and not yet acknowledged: running, or held "
            "for their retry countdown (kombu's `unacked` hash, all queues of this Redis database).",
            value=r.unacked,
        )
        yield GaugeMetricFamily(
            "ticketrelay_intake_stream_length",
            "Entries in the bookings stream (XLEN; read entries stay until the stream is trimmed).",
            value=r.intake_length,
        )
        yield GaugeMetricFamily(
            "ticketrelay_intake_pending_entries",
            "Entries read by an intake and not yet acknowledged (the consumer group's PEL).",
            value=r.intake_pending,
        )
        if r.intake_lag is not None:
            yield GaugeMetricFamily(
                "ticketrelay_intake_lag_entries",
                "Entries in the bookings stream not yet read by any intake (the consumer group's lag).",
                value=r.intake_lag,
            )
        yield GaugeMetricFamily(
            "ticketrelay_results_stream_length",
            "Entries in the default results stream (XLEN).",
            value=r.results_length,
        )
        yield GaugeMetricFamily(
            "ticketrelay_dead_letter_stream_length",
            "Entries in the dead-letter stream (XLEN).",
            value=r.dead_length,
        )

    def _memory_metrics(self, used: int, limit: int) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ticketrelay_redis_memory_used_bytes",
            "Memory Redis uses (INFO memory used_memory). At ticketrelay_redis_memory_max_bytes "
            "Redis refuses writes (noeviction): no booking can be published.",
            value=used,
        )
        yield GaugeMetricFamily(
            "ticketrelay_redis_memory_max_bytes",
            "Redis's memory limit (INFO memory maxmemory); 0 when it has none.",
            value=limit,
        )

    def _event_metrics(self, events: dict[str, float]) -> Iterator[Metric]:
        buckets: dict[tuple[str, ...], dict[float, float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        calls = CounterMetricFamily(
            "ticketrelay_provider_calls",
            "Provider calls by provider, account and outcome (issued, retry, failed, needs_review).",
            labels=["provider", "account", "outcome"],
        )
        retries = CounterMetricFamily(
            "ticketrelay_provider_retries",
            "Provider calls whose outcome was RETRY, by provider and error type (timeout, "
            "rate_limited, provider_error, ...). The last one of a booking turns into a give-up.",
            labels=["provider", "error_type"],
        )
        dead = CounterMetricFamily(
            "ticketrelay_dead_letters",
            "Entries written to the dead-letter stream by intake, by error type.",
            labels=["error_type"],
        )
        for name, value in sorted(events.items()):
            try:
                kind, *labels = json.loads(name)
            except (ValueError, TypeError):
                continue
            if kind == CALL_BUCKET and len(labels) == 3:
                le = float(labels[2])
                series = buckets.setdefault((labels[0], labels[1]), {})
                series[le] = series.get(le, 0.0) + value
            elif kind == CALL_SUM and len(labels) == 2:
                sums[(labels[0], labels[1])] = value
            elif kind == CALLS and len(labels) == 3:
                calls.add_metric(labels, value)
            elif kind == RETRIES and len(labels) == 2:
                retries.add_metric(labels, value)
            elif kind == DEAD_LETTERS and len(labels) == 1:
                dead.add_metric(labels, value)
        hist = HistogramMetricFamily(
            "ticketrelay_provider_call_duration_seconds",
            "Duration of provider calls (one attempt, including a reconciling lookup) by provider "
            "and outcome.",
            labels=["provider", "outcome"],
        )
        # One set of bounds for every series: today's buckets, plus any bound recorded under an
        # older bucket layout (still a correct cumulative count).
        recorded = {le for series in buckets.values() for le in series}
        bounds = sorted({float(b) for b in CALL_BUCKETS} | recorded | {float("inf")})
        for labels in sorted(set(buckets) | set(sums)):
            series = buckets.get(labels, {})
            total, cumulative = 0.0, []
            for le in bounds:
                total += series.get(le, 0.0)
                cumulative.append(("+Inf" if le == float("inf") else repr(le), total))
            hist.add_metric(list(labels), cumulative, sum_value=sums.get(labels, 0.0))
        yield hist
        yield calls
        yield retries
        yield dead
