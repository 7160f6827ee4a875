"""The shared rate limit against a real Redis, including two processes sharing one limit."""

from __future__ import annotations

import multiprocessing
import time

import redis

from worker.ratelimit import Limit, RateLimiter


def _hammer(url: str, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RateLimiter(redis.Redis.from_url(url))
    granted: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        p = limiter.try_acquire("eguma", "default", Limit(per_s=50, concurrency=None))
        if p.granted:
            granted.append(time.time())
        else:
            time.sleep(min(p.wait_s, 0.005))
    out.put(granted)


def test_two_processes_share_one_rate(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_hammer, args=(redis_url, 3.0, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    stamps = sorted(t for r in results for t in r)
    assert all(r for r in results), "both processes got some of the budget"
    # Over the steady part of the run the combined rate stays at the limit, never above it.
    window = [t for t in stamps if stamps[0] + 0.5 <= t <= stamps[0] + 2.5]
    rate = len(window) / 2.0
    assert 45 <= rate <= 50.5, rate
    # No one-second window holds more than the limit plus the small live burst.
    worst = max(sum(1 for u in stamps if t <= u < t + 1.0) for t in stamps)
    assert worst <= 50 + 0.2 * 50 + 1, worst


def test_concurrency_slots_are_shared_and_freed(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    lim = Limit(per_s=None, concurrency=2)
    a = limiter.try_acquire("remypass", "default", lim)
    b = limiter.try_acquire("remypass", "default", lim)
    c = limiter.try_acquire("remypass", "default", lim)
    assert a.granted and b.granted and not c.granted and c.wait_s > 0
    limiter.release("remypass", "default", a)
    assert limiter.try_acquire("remypass", "default", lim).granted
    # A holder that died frees its slot when its lease runs out.
    short = RateLimiter(redis_client, lease_s=0.2)
    lim1 = Limit(per_s=None, concurrency=1)
    assert short.try_acquire("eguma", "x", lim1).granted
    assert not short.try_acquire("eguma", "x", lim1).granted
    time.sleep(0.3)
    assert short.try_acquire("eguma", "x", lim1).granted


def test_live_goes_before_bulk(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, live_burst_s=0.5, bulk_reserve_s=0.15)
    lim = Limit(per_s=10, concurrency=None)
    first = limiter.try_acquire("eguma", "default", lim, bulk=True)
    assert first.granted and first.delay_s == 0  # an empty bucket: now
    second = limiter.try_acquire("eguma", "default", lim, bulk=True)
    assert second.granted and 0.08 <= second.delay_s <= 0.1  # reserved: the next slot, 100 ms on
    # Two slots reserved, 200 ms ahead: more than bulk may reserve, less than the live burst.
    third = limiter.try_acquire("eguma", "default", lim, bulk=True)
    assert not third.granted and third.wait_s > 0
    live = limiter.try_acquire("eguma", "default", lim, bulk=False)
    assert live.granted and live.delay_s == 0  # live goes at once


def test_bulk_is_paced_at_the_rate_and_reaches_it(redis_client: redis.Redis) -> None:
    """Threads that reserve and sleep until their slot: the rate is reached, never exceeded,
    and with no burst (what a nightly run at the provider's limit looks like)."""
    import threading

    limiter = RateLimiter(redis_client)
    lim = Limit(per_s=100, concurrency=None)
    stamps: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + 2.0

    def run() -> None:
        while time.monotonic() < end:
            p = limiter.acquire("eguma", "pace", lim, bulk=True, max_wait_s=1.0)
            if p.granted:
                time.sleep(0.003)  # the claim, done between the permit and the send
                p.wait_for_slot()
                with lock:
                    stamps.append(time.monotonic())

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    stamps.sort()
    steady = [t for t in stamps if stamps[0] + 0.25 <= t < stamps[0] + 1.75]
    assert 90 <= len(steady) / 1.5 <= 101, len(steady) / 1.5
    worst_1s = max(sum(1 for u in stamps if t <= u < t + 1.0) for t in stamps)
    assert worst_1s <= 100 + 3, worst_1s
    # Paced: 100 ms holds its 10 slots plus timer slack. Unpaced, the 0.1 s reservation would
    # let 20 go at once at the start, and bunches of them after.
    worst = max(sum(1 for u in stamps if t <= u < t + 0.1) for t in stamps)
    assert worst <= 15, worst


def test_a_429_penalty_halves_the_rate(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, live_burst_s=0.0)
    lim = Limit(per_s=100, concurrency=None)

    def count(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            p = limiter.try_acquire("fourvenues", "default", lim)
            n += p.granted
            if not p.granted:
                time.sleep(min(p.wait_s, 0.002))
        return n

    normal = count(1.0)
    limiter.penalise("fourvenues", "default", factor=2.0, for_s=5)
    slowed = count(1.0)
    # Upper bounds are the promise; the lower ones only show the loop was not starved (on a
    # loaded machine it may get fewer tries in).
    assert 60 <= normal <= 102 and 25 <= slowed <= 52, (normal, slowed)
    assert slowed < 0.75 * normal
