"""The two baselines of the issue: A, a raw Celery round trip of a no-op task on ticketrelay's
broker and pool settings; B, raw httpx POSTs to the sandbox at the same concurrency."""

from __future__ import annotations

import sys
import threading
import time
import uuid

import httpx

from bench.load import PhaseFigures, ResultReader, Traffic, eguma_body, figures, stream_tail
from bench.noop_app import NOOP_TASK, make_noop_app
from bench.system import ROOT, BenchError, System
from worker.settings import SANDBOX_API_KEY, Settings


def _parse_noop(fields: dict[bytes, bytes]) -> tuple[str, float, str] | None:
    raw = fields.get(b"t0")
    if raw is None:
        return None
    mid, _, t0 = raw.decode().partition("|")
    return mid, float(t0), "done"


def baseline_a(system: System, n: int, warmup: int = 100) -> PhaseFigures:
    """Sends n no-op tasks from this process (one thread, like intake sends), measured from
    the first send to the last task done, on a Celery worker of bench.noop_app."""
    assert system.r is not None
    queue = f"bench-noop-{system.run_id}"
    stream = f"bench:noop:{system.run_id}"
    env = system.env()
    env.update({"TICKETRELAY_QUEUE": queue, "BENCH_NOOP_STREAM": stream})
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.noop_app:app",
        "worker",
        "-Q",
        queue,
        "-E",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
        "-n",
        "noop@%h",
    ]
    proc = system.procs.start("noop-worker", argv, {**env, "REMAP_SIGTERM": "SIGQUIT"}, ROOT)
    system.monitor.add("noop-worker", proc.pid)
    settings = Settings(redis_url=system.redis_url, queue=queue, worker_concurrency=system.opts.concurrency)
    app = make_noop_app(settings)
    try:
        reader = ResultReader(system.r, stream, stream_tail(system.r, stream), _parse_noop)

        def send(traffic: Traffic, k: int) -> None:
            for _ in range(k):
                mid = uuid.uuid4().hex
                t0 = time.time()
                app.send_task(NOOP_TASK, args=[f"{mid}|{t0!r}"], queue=queue)
                traffic.sent[mid] = t0
                if not traffic.first_send:
                    traffic.first_send = t0
            traffic.last_send = time.time()

        def check() -> None:
            if proc.poll() is not None:
                raise BenchError(f"the no-op Celery worker exited ({proc.returncode}); see its log")

        warm = Traffic("baseline-a-warmup")
        send(warm, warmup)
        if reader.wait(set(warm.sent), 60, check):
            raise BenchError("baseline A: the no-op Celery worker did not run its warm-up tasks")
        system.monitor.phase_start()
        traffic = Traffic("baseline-a")
        send(traffic, n)
        missing = reader.wait(set(traffic.sent), 60, check)
        fig = figures("A: Celery no-op", traffic, reader, missing)
        fig.procs = system.monitor.phase_end()
        reader.stop()
        return fig
    finally:
        system.monitor.remove("noop-worker")
        system.procs.stop(["noop-worker"], timeout=10)
        app.close()
        system.r.delete(stream, queue)


def baseline_b(system: System, n: int, threads: int) -> PhaseFigures:
    """`threads` threads, one httpx.Client each, POST valid e-guma bookings (new
    Idempotency-Key each) to the sandbox until n requests are done."""
    url = f"{system.sandbox_url}/eguma/v1/ticketing/booking.json"
    body = eguma_body()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    left = [n]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with httpx.Client(timeout=30, headers={"User-Agent": "ticketrelay-bench"}) as client:
                while True:
                    with lock:
                        if left[0] <= 0:
                            return
                        left[0] -= 1
                    t0 = time.perf_counter()
                    resp = client.post(
                        url,
                        params={"apikey": SANDBOX_API_KEY},
                        json=body,
                        headers={"Idempotency-Key": str(uuid.uuid4())},
                    )
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt * 1000)
                        statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    system.monitor.phase_start()
    started = time.time()
    for t in workers:
        t.start()
    for t in workers:
        t.join(600)
    seconds = time.time() - started
    procs = system.monitor.phase_end()
    if errors:
        raise BenchError(f"baseline B: {type(errors[0]).__name__}: {errors[0]}")
    from bench.load import percentile

    fig = PhaseFigures(
        name="B: httpx -> sandbox",
        n=n,
        done=len(latencies),
        seconds=seconds,
        throughput=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
        statuses={("issued" if s == "201" else f"http {s}"): c for s, c in statuses.items()},
        missing=n - len(latencies),
        duplicates=0,
        procs=procs,
    )
    return fig
