"""`ticketrelay metrics`: one Prometheus endpoint for the whole deployment.

Everything is read at scrape time from the shared stores, so the numbers are the same whatever
the number of worker and intake processes, hosts, or exporters (run one, or two for
availability: they answer alike):

- SQL (the truth): one GROUP BY over ticket_issuances gives the bookings by provider, account
  and status and, per group, the oldest `created_at`, hence the age of the oldest unfinished
  booking. One query, one scan.
- Redis, in one pipeline: the Celery queue and its unacknowledged messages, the intake stream,
  its consumer group's pending entries and lag, the results and dead-letter streams, and the
  event counters that every process adds into the hash `metrics_key` (worker/metrics.py).

Endpoints: /metrics (Prometheus text, or OpenMetrics when asked) and /healthz ("ok").
A store that does not answer is reported as `ticketrelay_exporter_source_up{source=...} 0`,
and the other store's metrics are still served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, func, select

from schemas.envelope import PROVIDERS
from schemas.statuses import ACTIVE_STATUSES, Status
from worker import ledger
from worker.db import make_engine
from worker.metrics import CALL_BUCKET, CALL_BUCKETS, CALL_SUM, CALLS, DEAD_LETTERS, RETRIES
from worker.ops.reissue import running_runs
from worker.outage import outage_collectors
from worker.settings import AccountsError, Settings, get_accounts, get_settings

log = logging.getLogger("ticketrelay.metrics")

# kombu's Redis transport keeps a queue's messages of priority p (steps 0, 3, 6, 9) in the list
# `queue` (p = 0) or `queue\x06\x16<p>`, and messages delivered but not acknowledged (running,
# or held by a worker for their countdown) in the hash `unacked`.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_UNACKED_KEY = "unacked"


def _queue_lists(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS]


@dataclass
class RedisSnapshot:
    queue_length: int = 0
    bulk_queue_length: int = 0
    unacked: int = 0
    intake_length: int = 0
    intake_pending: int = 0
    intake_lag: int | None = None
    results_length: int = 0
    dead_length: int = 0
    events: dict[str, float] = field(default_factory=dict)


@dataclass
class SqlSnapshot:
    # (provider, account, status) -> (count, oldest created_at)
    groups: dict[tuple[str, str, str], tuple[int, datetime | None]]
    now: datetime


class TicketrelayCollector(Collector):
    """Builds every ticketrelay_* metric at scrape time (thread-safe: scrapes may overlap)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: redis.Redis,
        accounts: Iterable[tuple[str, str]],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        # Label values come only from configuration: a rejected row's account is whatever the
        # producer sent, so it is reported as "other" unless it is a configured account.
        self.accounts = frozenset(accounts)

    def describe(self) -> list[Metric]:
        return []  # not known before a scrape; keeps registration from querying the stores

    # --- reading the stores ------------------------------------------------------------------

    def read_redis(self) -> RedisSnapshot:
        s = self.settings
        pipe = self.client.pipeline(transaction=False)
        lists = _queue_lists(s.queue) + _queue_lists(s.bulk_queue)
        for name in lists:
            pipe.llen(name)
        pipe.hlen(_UNACKED_KEY)
        pipe.xlen(s.intake_stream)
        pipe.xinfo_groups(s.intake_stream)
        pipe.xlen(s.results_stream)
        pipe.xlen(s.dead_stream)
        pipe.hgetall(s.metrics_key)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
                raise reply
        n = len(lists)
        queue_lens, (unacked, intake_len, groups, results_len, dead_len, events) = replies[:n], replies[n:]
        snap = RedisSnapshot(
            queue_length=sum(_int(x) for x in queue_lens[: len(lists) // 2]),
            bulk_queue_length=sum(_int(x) for x in queue_lens[len(lists) // 2 :]),
            unacked=_int(unacked),
            intake_length=_int(intake_len),
            results_length=_int(results_len),
            dead_length=_int(dead_len),
        )
        if isinstance(groups, list):  # an error here means no stream yet: nothing pending
            for group in groups:
                if _text(group.get("name")) == s.intake_group:
                    snap.intake_pending = _int(group.get("pending"))
                    lag = group.get("lag")  # None when Redis cannot tell (after XDEL/trimming)
                    snap.intake_lag = int(lag) if lag is not None else None
        if isinstance(events, dict):
            for name, value in events.items():
                with contextlib.suppress(ValueError):
                    snap.events[_text(name)] = float(value)
        return snap

    def read_sql(self) -> SqlSnapshot:
        C = ledger.C
        stmt = select(C.provider, C.account, C.status, func.count(), func.min(C.created_at)).group_by(
            C.provider, C.account, C.status
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        groups: dict[tuple[str, str, str], tuple[int, datetime | None]] = {}
        for provider, account, status, count, oldest in rows:
            labels = self._booking_labels(provider, account, status)
            prev_n, prev_oldest = groups.get(labels, (0, None))
            oldest = ledger.as_utc(oldest)
            if prev_oldest is not None and (oldest is None or prev_oldest < oldest):
                oldest = prev_oldest
            groups[labels] = (prev_n + int(count), oldest)
        return SqlSnapshot(groups=groups, now=ledger.utcnow())

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
        up = GaugeMetricFamily(
            "ticketrelay_exporter_source_up",
            "1 when the exporter could read this store on this scrape (redis, database), else 0.",
            labels=["source"],
        )
        try:
            sql: SqlSnapshot | None = self.read_sql()
        except Exception as exc:
            log.warning("metrics: database unreadable: %s", type(exc).__name__, extra={"event": "metrics_db"})
            sql = None
        try:
            red: RedisSnapshot | None = self.read_redis()
        except Exception as exc:
            log.warning("metrics: redis unreadable: %s", type(exc).__name__, extra={"event": "metrics_redis"})
            red = None
        up.add_metric(["database"], 1 if sql is not None else 0)
        up.add_metric(["redis"], 1 if red is not None else 0)
        yield up
        if sql is not None:
            yield from self._sql_metrics(sql)
            with contextlib.suppress(Exception):  # a missing table must not cost the rest
                yield self._reissue_metric()
        if red is not None:
            yield from self._redis_metrics(red)
            yield from self._event_metrics(red.events)

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

    def _reissue_metric(self) -> Metric:
        runs = GaugeMetricFamily(
            "ticketrelay_reissue_run_bookings",
            'Bookings of each running bulk re-issuance by status; status="total" is what the run selected.',
            labels=["run", "status"],
        )
        for run in running_runs(self.engine):
            runs.add_metric([run["run_id"], "total"], run["total"])
            for status, n in sorted(run["by_status"].items()):
                runs.add_metric([run["run_id"], status], n)
        return runs

    def _redis_metrics(self, r: RedisSnapshot) -> Iterator[Metric]:
        s = self.settings
        queue = GaugeMetricFamily(
            "ticketrelay_celery_queue_length",
            "Issue and sweep tasks waiting in the Celery queue (Redis lists of every priority).",
            labels=["queue"],
        )
        queue.add_metric([s.queue], r.queue_length)
        queue.add_metric([s.bulk_queue], r.bulk_queue_length)
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


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, bytes, str)) else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- the HTTP side ------------------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise


def make_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """The exporter's HTTP server, in a background thread (`start`, `stop`)."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, pool_size=2)
        # One quick retry, no backoff: a scrape must answer within Prometheus' scrape timeout,
        # with `source_up{source="redis"} 0` if Redis does not.
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 1)
        )
        accounts = get_accounts(settings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = TicketrelayCollector(settings, self.engine, self.client, accounts.keys())
        self.registry.register(self.collector)
        for extra in outage_collectors(self.client, settings.metrics_key, accounts.keys()):
            self.registry.register(extra)
        host = settings.metrics_host if host is None else host
        port = settings.metrics_port if port is None else port
        server_class: type[_ThreadingWSGIServer] = _ThreadingWSGIServer
        if ":" in host:  # an IPv6 address such as "::"
            server_class = type("_V6Server", (_ThreadingWSGIServer,), {"address_family": socket.AF_INET6})
        self.httpd = make_server(host, port, make_app(self.registry), server_class, _QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = _text(self.httpd.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()
        self.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    from worker.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="ticketrelay metrics", description="Serve Prometheus metrics on /metrics (and /healthz)."
    )
    parser.add_argument("--host", help="listen address (default TICKETRELAY_METRICS_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default TICKETRELAY_METRICS_PORT, 9808)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        server = MetricsServer(get_settings(), args.host, args.port).start()
    except AccountsError as exc:  # labels are checked against the accounts: they are needed
        print(f"ticketrelay metrics: {exc}", file=sys.stderr)
        return 2
    log.info("serving metrics on %s/metrics", server.url, extra={"event": "metrics_listening"})
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
