"""When the sweeper last finished a pass: `ticketrelay_sweep_last_success_timestamp_seconds`.

The sweeper (Celery beat's `ticketrelay.sweep`, worker/issuing.py: sweep) re-drives rows that
stopped moving, bookings parked during a provider outage for longer than a Celery countdown
included, and publishes results that were never sent. If beat or its worker stops, nothing
fails loudly: those rows just wait. So each successful pass writes its time into Redis, and the
exporter serves it; an alert fires when it grows old (deploy/prometheus/alerts.yaml).

A Redis key rather than a prometheus_client Gauge in the sweeping process: the workers serve
no /metrics, and the exporter reads everything from the shared stores at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("ticketrelay.metrics")

METRIC = "ticketrelay_sweep_last_success_timestamp_seconds"


def sweep_key(metrics_key: str) -> str:
    """Beside the event counters (Settings.metrics_key)."""
    return f"{metrics_key}:sweep_last_success"


def record_sweep_success(client: Any, metrics_key: str, clock: Callable[[], float] = time.time) -> None:
    """Call at the end of a sweep that went through. Never raises: a metric must not fail the
    sweep (the next pass records again)."""
    try:
        client.set(sweep_key(metrics_key), repr(clock()))
    except Exception as exc:
        log.debug("sweep timestamp not recorded: %s", type(exc).__name__)


class SweepCollector(Collector):
    """Register beside the exporter's collector:
    `registry.register(SweepCollector(client, settings.metrics_key))`."""

    def __init__(self, client: redis.Redis, metrics_key: str) -> None:
        self.client = client
        self.key = sweep_key(metrics_key)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            value = self.client.get(self.key)
        except (redis.ConnectionError, redis.TimeoutError):
            return  # ticketrelay_exporter_source_up{source="redis"} already says so
        try:
            stamp = float(value) if value is not None else 0.0
        except ValueError:
            stamp = 0.0
        yield GaugeMetricFamily(
            METRIC,
            "Unix time at which the sweeper last finished a pass; 0 when no pass was ever recorded "
            "(since Redis was last emptied). time() minus this is how long nothing was re-driven.",
            value=stamp,
        )
