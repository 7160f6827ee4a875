"""worker.redis_clients: one set of timeouts for every purpose, and an ops client that gives
up at once on a Redis that is not there."""

from __future__ import annotations

import time

import pytest
import redis

from tests.conftest import free_port
from worker import redis_clients
from worker.settings import Settings


def test_every_purpose_has_the_same_timeouts_except_intake_block() -> None:
    s = Settings(intake_block_ms=4000)
    opts = {p: redis_clients.client_options(p, s) for p in redis_clients.PURPOSES}
    for purpose, o in opts.items():
        assert o["socket_connect_timeout"] == redis_clients.CONNECT_TIMEOUT_S, purpose
        assert o["health_check_interval"] == redis_clients.HEALTH_CHECK_INTERVAL_S, purpose
        assert o["socket_keepalive"] is True, purpose
    assert {o["socket_timeout"] for p, o in opts.items() if p != "intake"} == {redis_clients.READ_TIMEOUT_S}
    # Intake blocks 4 s in XREADGROUP: its read timeout must outlast the block.
    assert opts["intake"]["socket_timeout"] == redis_clients.READ_TIMEOUT_S + 4.0
    transport = redis_clients.celery_transport_options()
    assert transport["socket_timeout"] == redis_clients.READ_TIMEOUT_S
    assert transport["socket_connect_timeout"] == redis_clients.CONNECT_TIMEOUT_S


def test_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError, match="purpose"):
        redis_clients.client_options("cache", Settings())  # type: ignore[arg-type]


def test_the_ops_client_fails_fast_on_a_closed_port() -> None:
    s = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = redis_clients.client("ops", s)
    started = time.monotonic()
    with pytest.raises(redis_clients.UNREACHABLE):
        client.ping()
    # redis-py's default retries with backoff would take seconds here.
    assert time.monotonic() - started < 1.0
    assert redis_clients.answers(s.redis_url, 0.2) is False


def test_a_client_talks_to_the_configured_redis(redis_url: str) -> None:
    client = redis_clients.client("worker", Settings(redis_url=redis_url))
    client.set("redis-clients-test", "1")
    assert redis.Redis.from_url(redis_url).get("redis-clients-test") == b"1"
    assert redis_clients.answers(redis_url) is True
