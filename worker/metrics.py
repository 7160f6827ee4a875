"""Event metrics (provider call latency and outcome, retries, dead letters), recorded where they
happen and shared by every process on every host through one Redis hash.

Recording is in memory only: a call adds to a small per-process buffer under a lock, and a
daemon thread adds the buffer to the Redis hash `settings.metrics_key` every second, in one
MULTI/EXEC pipeline of HINCRBY / HINCRBYFLOAT. So the hot path never waits for Redis, and N
processes on M hosts simply add into the same counters; `worker.ops.metrics_server` reads the hash.

Metrics are best effort on purpose, unlike bookings: if Redis is down the buffer is kept and
sent with a later flush (it holds sums per label set, so it does not grow with traffic), and
what a process recorded in its last second is lost if it is SIGKILLed (or leaves via os._exit)
before the flush. A normal exit flushes once more (atexit). Nothing here ever raises into a task.

Labels are only provider, account, outcome and error_type: names from our code and the
accounts file, never anything from a message. Fields of the hash are JSON arrays
`[kind, label, ...]`, so a label can never be confused with the separator.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import platform
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.metrics_core import GaugeMetricFamily

from worker.version import VERSION

if TYPE_CHECKING:
    from worker.providers.base import Outcome

log = logging.getLogger("ticketrelay.metrics")

# Provider call latency buckets, seconds (the default call timeout is 15 s, an account's may be
# longer). Stored by their `le` text, so changing them later keeps old counts meaningful.
CALL_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
FLUSH_INTERVAL_S = 1.0

# Kinds of hash fields.
CALL_BUCKET = "call_bucket"  # [kind, provider, outcome, le] -> observations in that bucket
CALL_SUM = "call_sum"  # [kind, provider, outcome] -> seconds (float)
CALLS = "calls"  # [kind, provider, account, outcome]
RETRIES = "retries"  # [kind, provider, error_type]
DEAD_LETTERS = "dead_letters"  # [kind, error_type]

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class _Redis(Protocol):
    def pipeline(self, transaction: bool = ...) -> Any: ...


class _HasKey(Protocol):
    @property
    def metrics_key(self) -> str: ...


def safe_label(value: object, fallback: str = "other") -> str:
    """A label value from our own vocabulary; anything unexpected becomes `fallback`."""
    text = str(value) if value is not None else ""
    return text if _SAFE_LABEL.match(text) else fallback


def field_name(kind: str, *labels: str) -> str:
    return json.dumps([kind, *labels], separators=(",", ":"))


def le_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def bucket_for(seconds: float, buckets: tuple[float, ...] = CALL_BUCKETS) -> str:
    for bound in buckets:
        if seconds <= bound:
            return le_text(bound)
    return "+Inf"


@dataclass
class _Pending:
    client: Any
    key: str
    ints: Counter[str] = field(default_factory=Counter)
    floats: dict[str, float] = field(default_factory=dict)

    def merge(self, other: _Pending) -> None:
        self.ints.update(other.ints)
        for name, value in other.floats.items():
            self.floats[name] = self.floats.get(name, 0.0) + value


class Recorder:
    """The per-process buffer and its flush thread (started on first use)."""

    def __init__(self, interval_s: float = FLUSH_INTERVAL_S, start_thread: bool = True) -> None:
        self.interval_s = interval_s
        self._start_thread = start_thread
        self._reset()

    def _reset(self) -> None:
        # Also called in a forked child: the parent's lock may be held, its thread is gone.
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False

    # --- recording (the hot path: memory only) ---------------------------------------------

    def add(
        self, client: _Redis, key: str, ints: dict[str, int], floats: dict[str, float] | None = None
    ) -> None:
        # The buffer is per Redis client, so events go to the Redis the recording code uses
        # (in tests: a fakeredis or the test database, never a default server).
        with self._lock:
            pending = self._pending.get((id(client), key))
            if pending is None:
                pending = self._pending[(id(client), key)] = _Pending(client, key)
            pending.ints.update(ints)
            for name, value in (floats or {}).items():
                pending.floats[name] = pending.floats.get(name, 0.0) + value
            if self._thread is None and self._start_thread:
                self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._thread.start()

    # --- flushing ---------------------------------------------------------------------------

    def flush(self) -> bool:
        """Add everything buffered to Redis. True when nothing is left over. Never raises."""
        with self._lock:
            batch, self._pending = self._pending, {}
        ok = True
        for pending in batch.values():
            if not pending.ints and not pending.floats:
                continue
            try:
                # MULTI/EXEC: all or nothing, so a batch kept after a failure is never counted
                # twice. (A connection lost after EXEC but before its reply could, once.)
                pipe = pending.client.pipeline(transaction=True)
                for name, n in pending.ints.items():
                    pipe.hincrby(pending.key, name, n)
                for name, x in pending.floats.items():
                    pipe.hincrbyfloat(pending.key, name, x)
                pipe.execute()
            except Exception as exc:  # Redis down or anything else: keep it for the next flush
                ok = False
                with self._lock:
                    slot = self._pending.setdefault(
                        (id(pending.client), pending.key), _Pending(pending.client, pending.key)
                    )
                    slot.merge(pending)
                if not self._failing:
                    log.warning(
                        "metrics flush failed; will retry: %s",
                        type(exc).__name__,
                        extra={"event": "metrics_flush_failed", "error": type(exc).__name__},
                    )
                self._failing = True
        if ok and self._failing:
            self._failing = False
            log.info("metrics flush works again", extra={"event": "metrics_flush_recovered"})
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:  # pragma: no cover - flush already catches; never end the thread
                log.exception("metrics flush thread error", extra={"event": "metrics_error"})

    def stop(self) -> None:
        self._stop.set()


_recorder = Recorder()


def recorder() -> Recorder:
    return _recorder


def flush() -> bool:
    return _recorder.flush()


if hasattr(os, "register_at_fork"):
    # Celery's prefork pool forks after import: each child gets a fresh buffer and thread.
    os.register_at_fork(after_in_child=_recorder._reset)


@atexit.register
def _flush_at_exit() -> None:
    # A last flush on a normal exit, but never hold the exit up for long if Redis is away.
    last = threading.Thread(target=_recorder.flush, name="metrics-last-flush", daemon=True)
    last.start()
    last.join(2.0)


# --- what the code records (one line at each place) -----------------------------------------


def provider_call(
    client: _Redis, settings: _HasKey, provider: str, account: str, outcome: Outcome, elapsed: float
) -> None:
    """One provider call: latency by provider and outcome, count by account, retries by type."""
    try:
        p, a, kind = safe_label(provider), safe_label(account), safe_label(outcome.kind.value)
        ints = {field_name(CALL_BUCKET, p, kind, bucket_for(elapsed)): 1, field_name(CALLS, p, a, kind): 1}
        if kind == "retry":
            error_type = safe_label(outcome.error.type if outcome.error else "unknown")
            ints[field_name(RETRIES, p, error_type)] = 1
        _recorder.add(client, settings.metrics_key, ints, {field_name(CALL_SUM, p, kind): float(elapsed)})
    except Exception:  # metrics must never break the work
        log.debug("metrics: provider_call not recorded", exc_info=True)


def dead_letter(client: _Redis, settings: _HasKey, error_type: str) -> None:
    """One entry written to the dead-letter stream, by the type of its reason."""
    try:
        _recorder.add(client, settings.metrics_key, {field_name(DEAD_LETTERS, safe_label(error_type)): 1})
    except Exception:
        log.debug("metrics: dead_letter not recorded", exc_info=True)


def build_info() -> GaugeMetricFamily:
    """`ticketrelay_build_info{version,python} 1`, the usual Prometheus idiom for which release
    answers: join on it, alert when two versions run for long. It is the exporter's own release
    (worker/version.py); during a rolling deploy the workers may still run the previous one."""
    info = GaugeMetricFamily(
        "ticketrelay_build_info",
        "The ticketrelay release this exporter runs (always 1; the labels carry the information).",
        labels=["version", "python"],
    )
    info.add_metric([VERSION, platform.python_version()], 1)
    return info
