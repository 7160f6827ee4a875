"""Every Redis client of ticketrelay is built here, per purpose, with one set of timeouts.

A silent connection (a host gone without a reset) must raise, not hang: every client has a
connect and a read timeout, TCP keepalives, and checks an idle connection before reusing it.
Purposes differ only where they must:

- intake: its XREADGROUP blocks server-side for intake_block_ms, so its read timeout is the
  common one plus that block;
- worker, results: redis-py's retries with backoff (a Redis restart is ridden out);
- ops (status, the metrics exporter, one-shot commands, developer tools): one immediate retry,
  then the error, because a person or a scrape is waiting for the answer.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.settings import Settings, get_settings

Purpose = Literal["intake", "worker", "results", "ops"]
PURPOSES: tuple[Purpose, ...] = ("intake", "worker", "results", "ops")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
HEALTH_CHECK_INTERVAL_S = 10

# Errors that mean "Redis did not answer", as opposed to a command Redis refused.
UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


def client_options(purpose: Purpose, settings: Settings | None = None) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown Redis client purpose {purpose!r}")
    read_timeout = READ_TIMEOUT_S
    if purpose == "intake":
        read_timeout += (settings or get_settings()).intake_block_ms / 1000
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": read_timeout,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if purpose == "ops":
        options["retry"] = Retry(NoBackoff(), 1)
    return options


def client(purpose: Purpose, settings: Settings | None = None) -> redis.Redis:
    """A client for the configured Redis (TICKETRELAY_REDIS_URL)."""
    s = settings or get_settings()
    return for_url(s.redis_url, purpose, s)


def for_url(url: str, purpose: Purpose, settings: Settings | None = None) -> redis.Redis:
    return redis.Redis.from_url(url, **client_options(purpose, settings), **tls_options(url, settings))


def uses_tls(url: str) -> bool:
    return url.lower().startswith("rediss://")


def tls_options(url: str, settings: Settings | None = None) -> dict[str, Any]:
    """For a rediss:// URL: verify the server's certificate and host name, against
    TICKETRELAY_REDIS_TLS_CA_FILE when set (a private CA), else the system's CAs."""
    if not uses_tls(url):
        return {}
    ca_file = (settings or get_settings()).redis_tls_ca_file
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    return options


def celery_broker_ssl(settings: Settings | None = None) -> dict[str, Any] | None:
    """Celery's broker_use_ssl for a rediss:// broker (kombu's names), None for redis://."""
    s = settings or get_settings()
    if not uses_tls(s.redis_url):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if s.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(s.redis_tls_ca_file)
    return options


def celery_transport_options() -> dict[str, Any]:
    """The same timeouts for Celery's broker connections (kombu's Redis transport options)."""
    return {
        "socket_timeout": READ_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers PING at `url` within `timeout_s` (a probe, not a client: used
    while waiting for a server to come up, hence its own short timeout)."""
    probe = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        **tls_options(url),
    )
    try:
        return bool(probe.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        probe.close()
