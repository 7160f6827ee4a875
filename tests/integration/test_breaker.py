"""The per-account circuit breaker against a real Redis, on an injected clock (fast), plus one
run on Redis' own clock."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.result import ResultError
from worker.backoff import next_delay
from worker.breaker import (
    Breaker,
    BreakerCollector,
    Permit,
    Policy,
    State,
    WaitUntil,
    gate,
    is_outage_failure,
    policy_for,
    report,
)
from worker.providers.base import Outcome, OutcomeKind, failed, issued, needs_review, retry
from worker.settings import sandbox_accounts

P, A = "eguma", "default"
POLICY = Policy(failure_threshold=3, failure_window_s=60, open_s=5, max_open_s=40, probe_lease_s=30)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(redis_client: redis.Redis, clock: Clock) -> Breaker:
    return Breaker(redis_client, policy=POLICY, clock=clock, rng=random.Random(7))


def trip(b: Breaker, n: int = POLICY.failure_threshold) -> None:
    for _ in range(n):
        permit = b.try_pass(P, A)
        assert isinstance(permit, Permit)
        b.record(P, A, permit, failure=True)


def probe(b: Breaker) -> Permit:
    permit = b.try_pass(P, A)
    assert isinstance(permit, Permit) and permit.probe, permit
    return permit


def test_consecutive_failures_open_it_and_a_success_resets_the_run(breaker: Breaker) -> None:
    trip(breaker, 2)
    breaker.record(P, A, Permit(), failure=False)
    trip(breaker, 2)
    assert breaker.state(P, A) is State.CLOSED  # 2 + 2 failures, but not 3 in a row
    permit = breaker.try_pass(P, A)
    assert isinstance(permit, Permit) and not permit.probe
    assert breaker.record(P, A, permit, failure=True) is State.OPEN
    assert breaker.state(P, A) is State.OPEN
    assert breaker.transitions() == {(P, A, "open"): 1}
    # Another account of the same provider is not affected.
    other = breaker.try_pass(P, "other")
    assert isinstance(other, Permit) and breaker.state(P, "other") is State.CLOSED


def test_a_run_of_failures_is_forgotten_after_the_window(breaker: Breaker, clock: Clock) -> None:
    trip(breaker, 2)
    clock.t += POLICY.failure_window_s + 1
    trip(breaker, 2)
    assert breaker.state(P, A) is State.CLOSED
    trip(breaker, 1)
    assert breaker.state(P, A) is State.OPEN


def test_while_open_callers_wait_without_a_call_then_exactly_one_probes(
    breaker: Breaker, clock: Clock
) -> None:
    trip(breaker)
    opened = clock.t
    answer = breaker.try_pass(P, A)
    assert isinstance(answer, WaitUntil) and answer.state is State.OPEN
    # Until the open interval ends, plus at most the jitter (a fifth of the interval).
    assert opened + 5 <= answer.at <= opened + 5 + 0.2 * 5
    assert answer.wait_s == pytest.approx(answer.at - clock.t)
    clock.t += 4.9
    assert isinstance(breaker.try_pass(P, A), WaitUntil)
    clock.t += 0.2
    assert breaker.state(P, A) is State.HALF_OPEN  # due: the next caller probes
    first = probe(breaker)
    for _ in range(5):
        again = breaker.try_pass(P, A)
        assert isinstance(again, WaitUntil) and again.state is State.HALF_OPEN
        assert again.wait_s > 0
    assert breaker.transitions()[(P, A, "half_open")] == 1
    assert breaker.record(P, A, first, failure=False) is State.CLOSED
    assert breaker.state(P, A) is State.CLOSED
    after = breaker.try_pass(P, A)
    assert isinstance(after, Permit) and not after.probe
    assert breaker.transitions() == {(P, A, "open"): 1, (P, A, "half_open"): 1, (P, A, "closed"): 1}


def test_a_failed_probe_reopens_with_a_growing_capped_interval(breaker: Breaker, clock: Clock) -> None:
    trip(breaker)
    intervals = []
    for _ in range(5):
        opened = clock.t
        while True:
            answer = breaker.try_pass(P, A)
            if isinstance(answer, Permit):
                break
            clock.t += 0.25
        assert answer.probe
        intervals.append(clock.t - opened)
        assert breaker.record(P, A, answer, failure=True) is State.OPEN
    assert intervals == [5, 10, 20, 40, 40]  # doubled after each failed probe, capped at 40
    assert breaker.transitions() == {(P, A, "open"): 6, (P, A, "half_open"): 5}


def test_late_results_of_calls_made_before_it_opened_change_nothing(breaker: Breaker, clock: Clock) -> None:
    in_flight = [breaker.try_pass(P, A) for _ in range(4)]
    assert all(isinstance(p, Permit) for p in in_flight)
    trip(breaker)
    wait_before = breaker.try_pass(P, A)
    assert isinstance(wait_before, WaitUntil)
    for permit in in_flight[:2]:
        assert isinstance(permit, Permit)
        assert breaker.record(P, A, permit, failure=False) is None
        assert breaker.record(P, A, permit, failure=True) is None
    assert breaker.state(P, A) is State.OPEN
    # The open interval was not extended by the late failures.
    clock.t += 5.01
    live = probe(breaker)
    # A late success from an ordinary permit during the probe does not close it either.
    assert breaker.record(P, A, in_flight[2], failure=False) is None  # type: ignore[arg-type]
    assert breaker.state(P, A) is State.HALF_OPEN
    assert breaker.record(P, A, live, failure=False) is State.CLOSED


def test_many_threads_many_clients_one_probe(redis_url: str, clock: Clock) -> None:
    breakers = [Breaker(redis.Redis.from_url(redis_url), policy=POLICY, clock=clock) for _ in range(8)]
    trip(breakers[0])
    clock.t += 6
    start = threading.Barrier(40)
    answers: list[Permit | WaitUntil] = []
    lock = threading.Lock()

    def contend(i: int) -> None:
        b = breakers[i % len(breakers)]
        start.wait()
        for _ in range(5):
            a = b.try_pass(P, A)
            with lock:
                answers.append(a)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    probes = [a for a in answers if isinstance(a, Permit)]
    assert len(answers) == 200
    assert len(probes) == 1 and probes[0].probe
    assert all(a.state is State.HALF_OPEN for a in answers if isinstance(a, WaitUntil))


def test_a_killed_probe_frees_itself_after_its_lease(breaker: Breaker, clock: Clock) -> None:
    trip(breaker)
    clock.t += 5.01
    dead = probe(breaker)  # its worker is killed: it never reports
    clock.t += 29
    waiting = breaker.try_pass(P, A)
    assert isinstance(waiting, WaitUntil) and waiting.state is State.HALF_OPEN
    # Told to come back no later than the lease's end.
    assert waiting.at <= clock.t + 1 + 0.2 * 5
    clock.t += 1.01
    second = probe(breaker)
    assert second.token != dead.token
    # Only one half_open transition: the lease ran out, the state did not change.
    assert breaker.transitions()[(P, A, "half_open")] == 1
    # The dead probe's worker comes back to life with a failure: not the current probe.
    assert breaker.record(P, A, dead, failure=True) is None
    assert breaker.state(P, A) is State.HALF_OPEN
    assert breaker.record(P, A, second, failure=False) is State.CLOSED


def test_an_unused_probe_is_released_for_the_next_caller(breaker: Breaker, clock: Clock) -> None:
    trip(breaker)
    clock.t += 5.01
    first = probe(breaker)
    assert isinstance(breaker.try_pass(P, A), WaitUntil)
    breaker.release(P, A, first)
    second = probe(breaker)
    # A release of the old token does not take the new probe away.
    breaker.release(P, A, first)
    assert isinstance(breaker.try_pass(P, A), WaitUntil)
    assert breaker.record(P, A, second, failure=False) is State.CLOSED


def test_an_outage_costs_the_provider_one_call_per_open_interval(redis_client: redis.Redis) -> None:
    """An hour of 503s, 40 bookings each coming back when told: after the first failures,
    calls reach the provider only as probes, at least `open_s` apart, and no booking is
    refused for good."""
    clock = Clock()
    policy = Policy()  # the defaults
    b = Breaker(redis_client, policy=policy, clock=clock)
    start, end = clock.t, clock.t + 3600
    due = [(start + i * 0.1, i) for i in range(40)]  # 40 bookings arrive within 4 s
    heapq.heapify(due)
    calls: list[float] = []
    while due[0][0] < end:
        clock.t, booking = heapq.heappop(due)
        answer = b.try_pass(P, A)
        if isinstance(answer, Permit):
            calls.append(clock.t)
            b.record(P, A, answer, failure=True)
            heapq.heappush(due, (clock.t + 1.0, booking))  # its ordinary backoff
        else:
            assert answer.wait_s > 0
            heapq.heappush(due, (clock.t + answer.wait_s, booking))
    probes = calls[policy.failure_threshold :]
    assert calls[policy.failure_threshold - 1] < start + 0.5  # opened within the first 5 calls
    gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
    assert min(gaps) >= policy.open_s
    assert max(gaps) <= policy.max_open_s * (1 + policy.jitter) + 1.0
    # 5, 10, 20, 40 s and then about one a minute: some 60 calls in the hour.
    assert 50 <= len(probes) <= 62, len(probes)


def test_redis_clock_by_default(redis_client: redis.Redis) -> None:
    b = Breaker(redis_client, policy=Policy(failure_threshold=1, open_s=0.2, max_open_s=1, jitter=0))
    trip(b, 1)
    wait = b.try_pass(P, A)
    assert isinstance(wait, WaitUntil) and 0.1 < wait.wait_s <= 0.2
    # `at` is on Redis' clock, which is this machine's.
    assert abs(wait.at - (time.time() + wait.wait_s)) < 1.0
    time.sleep(wait.wait_s + 0.02)
    assert b.state(P, A) is State.HALF_OPEN
    assert b.record(P, A, probe(b), failure=False) is State.CLOSED


def test_reset_closes_it(breaker: Breaker) -> None:
    trip(breaker)
    breaker.reset(P, A)
    assert breaker.state(P, A) is State.CLOSED
    permit = breaker.try_pass(P, A)
    assert isinstance(permit, Permit) and not permit.probe


def test_policy_is_checked() -> None:
    for bad in (
        {"failure_threshold": 0},
        {"open_s": 0},
        {"open_s": 10, "max_open_s": 5},
        {"growth": 0.5},
        {"probe_lease_s": 0},
    ):
        with pytest.raises(ValueError):
            Policy(**bad)  # type: ignore[arg-type]


# --- what counts as an outage, and the functions the issue path calls --------------------------


def test_only_outage_failures_count() -> None:
    outage = [
        retry("provider_unavailable", "503", may_have_created=False, http_status=503),
        retry("provider_error", "500", may_have_created=True, http_status=500),
        retry("timeout", "read timeout", may_have_created=True),
        retry("network_error", "connect", may_have_created=False),
    ]
    alive = [
        retry("rate_limited", "429", may_have_created=False, http_status=429),
        retry("in_progress", "409", may_have_created=True, http_status=409),
        failed("validation_error", "400", http_status=400),
        needs_review("conflict", "?"),
        issued([]),
        Outcome(kind=OutcomeKind.RETRY, error=None),
    ]
    assert all(is_outage_failure(o) for o in outage)
    assert not any(is_outage_failure(o) for o in alive)


def test_gate_and_report_with_accounts_and_outcomes(breaker: Breaker, clock: Clock) -> None:
    account = sandbox_accounts("http://sandbox")[(P, A)]
    down = retry("provider_unavailable", "503", may_have_created=False, http_status=503)
    limited = retry("rate_limited", "429", may_have_created=False, http_status=429)
    for _ in range(5):  # 429s are the provider alive: they never open it
        permit = gate(breaker, account)
        assert isinstance(permit, Permit)
        report(breaker, account, permit, limited)
    moved = []
    for _ in range(POLICY.failure_threshold):
        permit = gate(breaker, account)
        assert isinstance(permit, Permit)
        moved.append(report(breaker, account, permit, down))
    assert moved == [None, None, State.OPEN]
    assert isinstance(gate(breaker, account), WaitUntil)
    clock.t += 6
    probe_permit = gate(breaker, account)
    assert isinstance(probe_permit, Permit) and probe_permit.probe
    # A 4xx refusal on the probe: the provider answers, so the circuit closes.
    refused = failed("validation_error", "bad seat", http_status=422)
    assert report(breaker, account, probe_permit, refused) is State.CLOSED


def test_the_probe_lease_outlasts_the_account_timeout() -> None:
    accounts = sandbox_accounts("http://sandbox")
    base = Policy(probe_lease_s=30)
    assert policy_for(accounts[(P, A)], base) is base  # 15 s timeout: 30 s lease is enough
    slow = accounts[(P, A)].model_copy(update={"timeout_s": 45.0})
    assert policy_for(slow, base).probe_lease_s == 90
    assert policy_for(slow, base).failure_threshold == base.failure_threshold


def test_gate_honours_a_policy_per_account(breaker: Breaker) -> None:
    account = sandbox_accounts("http://sandbox")[(P, A)]
    strict = Policy(failure_threshold=1, open_s=1, max_open_s=1)
    permit = gate(breaker, account, strict)
    assert isinstance(permit, Permit)
    down = Outcome(kind=OutcomeKind.RETRY, error=ResultError(type="timeout", message="t", retryable=True))
    assert report(breaker, account, permit, down, strict) is State.OPEN


# --- metrics ------------------------------------------------------------------------------------


def _scrape(collector: BreakerCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_metrics_show_state_and_transitions_of_configured_accounts(breaker: Breaker, clock: Clock) -> None:
    accounts = [(P, A), ("remypass", "default")]
    trip(breaker)
    text = _scrape(BreakerCollector(breaker, accounts))
    assert 'ticketrelay_breaker_state{account="default",provider="eguma"} 1.0' in text
    assert 'ticketrelay_breaker_state{account="default",provider="remypass"} 0.0' in text
    assert 'ticketrelay_breaker_transitions_total{account="default",provider="eguma",to="open"} 1.0' in text
    assert (
        'ticketrelay_breaker_transitions_total{account="default",provider="remypass",to="open"} 0.0' in text
    )
    clock.t += 6
    assert 'provider="eguma"} 2.0' in _scrape(BreakerCollector(breaker, accounts))  # due: half-open
    # An account that is not configured never becomes a label.
    breaker.record("eguma", "not-configured", Permit(), failure=True)
    assert "not-configured" not in _scrape(BreakerCollector(breaker, accounts))


def test_metrics_are_left_out_when_redis_is_down() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    collector = BreakerCollector(Breaker(dead), [(P, A)])
    assert "ticketrelay_breaker_state" not in _scrape(collector)


def test_a_six_hour_outage_leaves_every_booking_attempts_to_spare(redis_client: redis.Redis) -> None:
    """The defaults of docs/outages.md, played out: 40 bookings, the provider down for 6 hours,
    each booking retrying with its ordinary backoff (8 attempts, 1 s base, 300 s cap) and
    parked whenever the breaker says wait; a failed probe is not charged (worker/outage.py).
    Every booking is issued after the recovery, none runs out of attempts, and the provider saw
    one call a minute during the outage."""
    clock = Clock()
    policy = Policy()
    b = Breaker(redis_client, policy=policy, clock=clock, rng=random.Random(1))
    rng = random.Random(2)
    recovered_at = clock.t + 6 * 3600
    charged = dict.fromkeys(range(40), 0)
    calls = dict.fromkeys(range(40), 0)
    issued_at: dict[int, float] = {}
    due = [(clock.t + i * 7.0, i) for i in range(40)]  # arriving over the first 5 minutes
    heapq.heapify(due)
    while due:
        clock.t, booking = heapq.heappop(due)
        answer = b.try_pass(P, A)
        if isinstance(answer, WaitUntil):
            heapq.heappush(due, (clock.t + answer.wait_s, booking))
            continue
        calls[booking] += 1
        if clock.t >= recovered_at:
            b.record(P, A, answer, failure=False)
            issued_at[booking] = clock.t
            continue
        b.record(P, A, answer, failure=True)
        if not answer.probe:
            charged[booking] += 1
        assert charged[booking] < 8, f"booking {booking} ran out of attempts"
        # Backoff on the charged attempts: a booking that probed ten times does not then wait
        # the 300 s cap after the recovery.
        delay = next_delay(max(charged[booking], 1), 1.0, 300.0, rng=rng)
        heapq.heappush(due, (clock.t + delay, booking))
    assert len(issued_at) == 40
    # Only the calls that opened the circuit were charged (here one booking's own retries):
    # at least max_attempts - failure_threshold attempts are left to every booking.
    assert sum(charged.values()) == policy.failure_threshold, charged
    # All done within a few minutes of the recovery (the breaker's longest wait plus jitter).
    assert max(issued_at.values()) - recovered_at < 2 * policy.max_open_s * (1 + policy.jitter)
    outage_calls = sum(calls.values()) - 40  # less the one successful call of each booking
    assert outage_calls <= policy.failure_threshold + 6 * 60 + 5, outage_calls
