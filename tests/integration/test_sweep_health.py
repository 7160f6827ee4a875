"""The sweeper's last-success timestamp through a real Redis to the exporter's text format."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.sweep_health import SweepCollector, record_sweep_success, sweep_key


def scrape(client: redis.Redis) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SweepCollector(client, "ticketrelay:metrics"))
    return generate_latest(registry).decode()


def test_the_last_sweep_is_served_and_zero_before_any(redis_client: redis.Redis) -> None:
    assert "ticketrelay_sweep_last_success_timestamp_seconds 0.0" in scrape(redis_client)
    record_sweep_success(redis_client, "ticketrelay:metrics", clock=lambda: 1_796_000_000.5)
    assert redis_client.get(sweep_key("ticketrelay:metrics")) == b"1796000000.5"
    assert "ticketrelay_sweep_last_success_timestamp_seconds 1.7960000005e+09" in scrape(redis_client)
    record_sweep_success(redis_client, "ticketrelay:metrics", clock=lambda: 1_796_000_015.0)
    assert "1.796000015e+09" in scrape(redis_client)


def test_redis_down_neither_raises_nor_serves_a_value() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    record_sweep_success(dead, "ticketrelay:metrics")  # must not raise into the sweep
    assert "ticketrelay_sweep_last_success_timestamp_seconds" not in scrape(dead)
