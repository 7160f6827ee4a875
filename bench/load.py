"""Traffic for the end-to-end phases: envelopes, the publisher (burst, fixed rate, window) and
the result reader (XREAD BLOCK on the result stream), and the per-phase figures."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.devtools.demo import demo_envelopes

_SAFE = re.compile(r"[^A-Za-z0-9._:-]+")
PROVIDERS = ("eguma", "fourvenues", "fourvenues_channels", "remypass")


class StalledError(RuntimeError):
    """No booking finished for a long time: the system is stuck."""


class Envelopes:
    """Valid envelopes (worker.devtools.demo's samples), unique message_ids, spread round-robin over
    the chosen providers; metadata carries the send time t0 (echoed in the result)."""

    def __init__(self, run_id: str, providers: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.providers = providers
        by_provider = {e["provider"]: e for e in demo_envelopes(run_id)}
        self.templates = [by_provider[p] for p in providers]
        self.n = 0

    def next(self, phase: str) -> tuple[str, str]:
        """(message_id, the JSON envelope) with t0 = now."""
        self.n += 1
        tpl = self.templates[self.n % len(self.templates)]
        mid = f"bench-{self.run_id}-{_SAFE.sub('-', phase)}-{self.n}"
        env = dict(tpl)
        env["message_id"] = mid
        env["metadata"] = {"t0": repr(time.time()), "phase": phase}
        if tpl["provider"] == "remypass":
            env["payload"] = {**tpl["payload"], "bookingId": f"BK-{mid}"}
        return mid, json.dumps(env)


def eguma_body() -> dict[str, Any]:
    """A valid e-guma booking request body (the demo sample)."""
    env = next(e for e in demo_envelopes("b") if e["provider"] == "eguma")
    body: dict[str, Any] = copy.deepcopy(env["payload"])
    return body


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


@dataclass
class Received:
    latency_s: float
    status: str
    at: float  # time.time() when read


class ResultReader:
    """Reads a stream from the entry after `start_id` in a thread; keeps one record per
    message_id (first seen) and counts repeats."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        start_id: str,
        parse: Callable[[dict[bytes, bytes]], tuple[str, float, str] | None],
    ) -> None:
        self.client = client
        self.stream = stream
        self.last_id = start_id
        self.parse = parse
        self.got: dict[str, Received] = {}
        self.duplicates = 0
        self.foreign = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                resp: Any = self.client.xread({self.stream: self.last_id}, count=2000, block=200)
                now = time.time()
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                        parsed = self.parse(fields)
                        if parsed is None:
                            self.foreign += 1
                            continue
                        mid, t0, status = parsed
                        if mid in self.got:
                            self.duplicates += 1
                        else:
                            self.got[mid] = Received(now - t0, status, now)
                with self._cond:
                    self._cond.notify_all()
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def count(self) -> int:
        return len(self.got)

    def wait(self, ids: set[str], stall_timeout: float, check: Callable[[], None]) -> set[str]:
        """Waits until every id arrived, or nothing new arrived for `stall_timeout` seconds.
        Returns the missing ids."""
        last_n, last_change = -1, time.monotonic()
        while True:
            if self.error is not None:
                raise self.error
            missing = ids - self.got.keys()
            if not missing:
                return set()
            n = len(self.got)
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > stall_timeout:
                return missing
            check()
            with self._cond:
                self._cond.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def parse_result(fields: dict[bytes, bytes]) -> tuple[str, float, str] | None:
    raw = fields.get(b"result")
    if raw is None:
        return None
    res = json.loads(raw)
    t0 = (res.get("metadata") or {}).get("t0")
    if t0 is None:
        return None
    return res["message_id"], float(t0), str(res["status"])


def stream_tail(client: redis.Redis, stream: str) -> str:
    last = client.xrevrange(stream, count=1)
    if not last:
        return "0-0"
    entry_id = last[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


@dataclass
class Traffic:
    """What one phase sent and got back."""

    name: str
    sent: dict[str, float] = field(default_factory=dict)  # message_id -> t0
    first_send: float = 0.0
    last_send: float = 0.0
    rss_track: list[tuple[int, int]] = field(default_factory=list)  # (received, worker rss)


class Publisher:
    def __init__(self, client: redis.Redis, stream: str, envelopes: Envelopes) -> None:
        self.client = client
        self.stream = stream
        self.envelopes = envelopes

    def _send(self, traffic: Traffic, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        batch: list[tuple[str, float]] = []
        for _ in range(n):
            mid, text = self.envelopes.next(traffic.name)
            pipe.xadd(self.stream, {"message": text})
            batch.append((mid, time.time()))
        pipe.execute()
        now = time.time()
        if not traffic.first_send:
            traffic.first_send = batch[0][1] if batch else now
        traffic.last_send = now
        traffic.sent.update(batch)

    def burst(self, traffic: Traffic, n: int, batch: int = 500) -> None:
        """All at once, pipelined in batches: the maximum throughput."""
        left = n
        while left > 0:
            k = min(batch, left)
            self._send(traffic, k)
            left -= k

    def at_rate(
        self,
        traffic: Traffic,
        n: int,
        rate: float,
        check: Callable[[], None],
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Open loop: n bookings at `rate` per second, whatever the system does (or fewer:
        it stops as soon as `until()` is true)."""
        start = time.monotonic()
        sent = 0
        while sent < n and not (until is not None and until()):
            due = min(n, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                self._send(traffic, due - sent)
                sent = due
            else:
                check()
                time.sleep(min(0.005, 1 / rate))

    def windowed(
        self,
        traffic: Traffic,
        n: int,
        window: int,
        received: Callable[[], int],
        check: Callable[[], None],
        on_progress: Callable[[int], None] | None = None,
        batch: int = 200,
        stall_timeout: float = 60,
    ) -> None:
        """Closed loop: keeps at most `window` bookings in flight (the soak)."""
        sent = 0
        base = received()
        last_check = last_change = time.monotonic()
        last_done = 0
        while sent < n:
            done = received() - base
            room = window - (sent - done)
            if room >= batch or (room > 0 and sent + room >= n):
                k = min(room, n - sent, batch)
                self._send(traffic, k)
                sent += k
            else:
                time.sleep(0.01)
            now = time.monotonic()
            if done != last_done:
                last_done, last_change = done, now
            elif now - last_change > stall_timeout:
                raise StalledError(
                    f"{traffic.name}: nothing done for {stall_timeout:.0f}s, {sent - done} in flight"
                )
            if now - last_check > 1:
                last_check = now
                check()
                if on_progress is not None:
                    on_progress(done)


@dataclass
class PhaseFigures:
    name: str
    n: int
    done: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    missing: int
    duplicates: int
    procs: dict[str, dict[str, float]] = field(default_factory=dict)  # cpu_s, peak_rss
    extra: dict[str, Any] = field(default_factory=dict)

    def cpu_per_1000(self, proc: str) -> float:
        cpu = self.procs.get(proc, {}).get("cpu_s", float("nan"))
        return cpu / max(1, self.done) * 1000

    @property
    def functional_problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{self.name}: {self.missing} of {self.n} bookings got no result")
        not_issued = {s: c for s, c in self.statuses.items() if s not in ("issued", "done")}
        if not_issued:
            out.append(f"{self.name}: results not issued: {not_issued}")
        return out


def figures(name: str, traffic: Traffic, reader: ResultReader, missing: set[str]) -> PhaseFigures:
    rec = [reader.got[m] for m in traffic.sent if m in reader.got]
    lat = [r.latency_s * 1000 for r in rec]
    end = max((r.at for r in rec), default=traffic.last_send)
    seconds = max(1e-9, end - traffic.first_send)
    return PhaseFigures(
        name=name,
        n=len(traffic.sent),
        done=len(rec),
        seconds=seconds,
        throughput=len(rec) / seconds,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        max_ms=max(lat, default=float("nan")),
        statuses=dict(Counter(r.status for r in rec)),
        missing=len(missing),
        duplicates=reader.duplicates,
    )
