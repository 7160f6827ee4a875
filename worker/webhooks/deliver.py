"""The deliverer: claim due outbox entries, POST each, signed, to its URL, record the answer.

A plain function, run by the beat task `ticketrelay.deliver_webhooks` every few seconds. It
never touches the issue path: results are queued by the publish transaction and sent from
here. Receivers are served side by side, each receiver's entries in turn; a receiver that
times out costs one timeout in a run, and its other entries wait for a later run, so a hung
receiver delays nothing but its own entries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import timedelta
from functools import lru_cache

import httpx
from sqlalchemy import Engine

from worker.backoff import parse_retry_after
from worker.ledger import utcnow
from worker.settings import AccountConfig, Settings
from worker.webhooks import outbox, signing
from worker.webhooks.config import HostPolicy, RetryPolicy, host_of, origin_of, signing_keys
from worker.webhooks.outbox import Entry

log = logging.getLogger("ticketrelay.webhooks")

USER_AGENT = "ticketrelay-webhooks/1"


@dataclass
class Report:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0  # given back unsent: their receiver just timed out or refused connections
    released: int = 0  # given back unsent: the run's lease was running out
    lost: int = 0  # the lease ended before the answer could be recorded

    def add(self, other: Report) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class _Answer:
    status: int | None
    error: str | None
    retry_after_s: float | None = None
    host_down: bool = False  # a timeout or a refused connection: the receiver, not the entry


def make_client(settings: Settings) -> httpx.Client:
    return _client(
        settings.callback_connect_timeout_s, settings.callback_timeout_s, settings.callback_concurrency
    )


def _client(connect_s: float, timeout_s: float, concurrency: int) -> httpx.Client:
    # No redirects (the specification: a 3xx is a failure; update the URL instead). The
    # environment's proxy settings are honoured: an egress proxy that filters internal
    # addresses is the specification's advice against SSRF.
    return httpx.Client(
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s, connect=connect_s),
        headers={"user-agent": USER_AGENT},
        limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=16),
    )


@lru_cache(maxsize=1)
def _shared_client(connect_s: float, timeout_s: float, concurrency: int) -> httpx.Client:
    return _client(connect_s, timeout_s, concurrency)


def shared_client(settings: Settings) -> httpx.Client:
    """One client per process for the beat task: keep-alive connections across runs."""
    return _shared_client(
        settings.callback_connect_timeout_s, settings.callback_timeout_s, settings.callback_concurrency
    )


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.callback_timeout_s, connect=settings.callback_connect_timeout_s)


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        accounts: dict[tuple[str, str], AccountConfig],
        client: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.accounts = accounts
        self.client = client
        self.clock = clock
        self.hosts = HostPolicy.from_settings(settings)
        self.retry = RetryPolicy.from_settings(settings)

    def run(self) -> Report:
        s = self.settings
        started = time.monotonic()
        if not outbox.has_due(self.engine):
            return Report()
        entries = outbox.claim_due(self.engine, s.callback_batch, s.callback_lease_s)
        report = Report(claimed=len(entries))
        if not entries:
            return report
        # A send may start only while a whole request still fits in the lease: past that,
        # another deliverer may take the entry, and two would send it at once.
        last_start = started + s.callback_lease_s - (s.callback_connect_timeout_s + s.callback_timeout_s) - 1
        by_host: dict[str, list[Entry]] = {}
        for entry in entries:
            by_host.setdefault(origin_of(entry.url), []).append(entry)
        workers = min(s.callback_concurrency, len(by_host))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhooks") as pool:
            for part in pool.map(lambda group: self._host_run(group, last_start), by_host.values()):
                report.add(part)
        if report.delivered or report.retried or report.dead:
            log.info("webhooks delivered", extra={"event": "webhooks_run", **report.as_dict()})
        return report

    def _host_run(self, entries: list[Entry], last_start: float) -> Report:
        report = Report()
        for i, entry in enumerate(entries):
            if time.monotonic() > last_start:
                report.released += sum(outbox.release(self.engine, e) for e in entries[i:])
                break
            answer = self._deliver(entry, report)
            if answer.host_down:
                # The same receiver again would most likely cost the same timeout: its other
                # entries go back unsent, no attempt counted, due after the base delay.
                until = utcnow() + timedelta(seconds=self.retry.base_s)
                report.deferred += sum(outbox.defer(self.engine, e, until) for e in entries[i + 1 :])
                break
        return report

    def _deliver(self, entry: Entry, report: Report) -> _Answer:
        answer = self._send(entry)
        ctx = {
            "webhook_id": entry.webhook_id,
            "idempotency_key": entry.idempotency_key,
            "revision": entry.revision,
            "host": host_of(entry.url),
            "http_status": answer.status,
            "attempt": entry.attempts + 1,
        }
        if answer.error is None and answer.status is not None:
            if outbox.mark_delivered(self.engine, entry, answer.status):
                report.delivered += 1
                log.info("webhook delivered", extra={"event": "webhook_delivered", **ctx})
            return answer
        error = answer.error or "no answer"
        if answer.status == 410:
            recorded = outbox.mark_dead(self.engine, entry, answer.status, error)
            outcome = "dead" if recorded else None
        else:
            outcome = outbox.mark_retry(
                self.engine, entry, self.retry, answer.status, error, answer.retry_after_s
            )
        if outcome is None:
            report.lost += 1
            log.warning("webhook lease lost before recording", extra={"event": "webhook_lease_lost", **ctx})
        elif outcome == "dead":
            report.dead += 1
            log.warning(
                "webhook given up; `ticketrelay webhooks replay` sends it again",
                extra={"event": "webhook_dead", "error": error, **ctx},
            )
        else:
            report.retried += 1
            # Not sent at all is a configuration problem for the operator, not a receiver's.
            level = logging.WARNING if error.startswith("not sent") else logging.INFO
            extra = {"event": "webhook_retry", "error": error, **ctx}
            log.log(level, "webhook not acknowledged", extra=extra)
        return answer

    def _send(self, entry: Entry) -> _Answer:
        """One attempt. Every error text here is ours: no URL, no response body, no secret."""
        refusal = self.hosts.refusal(entry.url)
        if refusal is not None:
            return _Answer(None, f"not sent: {refusal}")
        account = self.accounts.get((entry.provider, entry.account))
        if account is None:
            return _Answer(None, f"not sent: account {entry.provider}.{entry.account} is not configured")
        try:
            keys = signing_keys(account)
        except ValueError as exc:  # SecretFormatError too: its text never holds the value
            return _Answer(None, f"not sent: {exc}")
        timestamp = int(self.clock())
        headers = {
            **signing.headers(keys, entry.webhook_id, timestamp, entry.body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        s = self.settings
        try:
            # Streamed and closed unread: a receiver's answer body is never loaded.
            with self.client.stream(
                "POST", entry.url, content=entry.body, headers=headers, timeout=_timeout(s)
            ) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
        except httpx.TimeoutException as exc:
            why = f"timeout ({type(exc).__name__}, limit {s.callback_timeout_s:g}s)"
            return _Answer(None, why, host_down=True)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            return _Answer(None, f"connection failed ({type(exc).__name__})", host_down=True)
        except httpx.HTTPError as exc:
            return _Answer(None, f"request failed ({type(exc).__name__})")
        if 200 <= status < 300:
            return _Answer(status, None)
        if 300 <= status < 400:
            return _Answer(status, f"HTTP {status}: redirects are not followed; update callback_url")
        if status == 410:
            return _Answer(status, "HTTP 410 Gone: the receiver asked to stop; replay once it is fixed")
        return _Answer(status, f"HTTP {status}", retry_after_s=retry_after)


_PURGE_EVERY_S = 600.0
_last_purge: dict[str, float] = {}
_purge_lock = threading.Lock()


def purge_delivered(engine: Engine, settings: Settings, force: bool = False) -> int:
    """Delete delivered entries older than callback_keep_delivered_h, at most every ten
    minutes per process and database (the deliverer runs every few seconds)."""
    if settings.callback_keep_delivered_h <= 0:
        return 0
    with _purge_lock:
        now = time.monotonic()
        last = _last_purge.get(str(engine.url))
        if not force and last is not None and now - last < _PURGE_EVERY_S:
            return 0
        _last_purge[str(engine.url)] = now
    cutoff = utcnow() - timedelta(hours=settings.callback_keep_delivered_h)
    return outbox.purge(engine, delivered_before=cutoff, dead_before=None)


def deliver_due(
    engine: Engine,
    settings: Settings,
    accounts: dict[tuple[str, str], AccountConfig],
    client: httpx.Client | None = None,
) -> Report:
    """One run: claim what is due, send it, record the answers. Safe to run in several
    processes at once (the leases keep them apart)."""
    own = client is None
    http = client if client is not None else make_client(settings)
    try:
        return Deliverer(engine, settings, accounts, http).run()
    finally:
        if own:
            http.close()
