"""A circuit breaker per provider account, shared by every worker on every host through Redis
(beside the rate limiter, in the same style: Lua scripts, one key prefix, keys per account).

Why: when a provider is down, every booking used to spend its whole attempt budget against it
within a minute or two and end `failed` (issue 11: a 5-minute 503 outage failed 40 of 40
bookings). With the breaker, a run of outage failures OPENS the account's circuit; while open,
callers are told "wait until T" without calling the provider, so bookings stay `retrying`
without spending attempts. After the open interval ONE caller at a time gets a probe permit
(HALF_OPEN); the permit has a lease, so a probe whose worker was killed frees itself. The
probe's success CLOSES the circuit; its failure re-opens it with a longer interval (capped).
So during an outage the provider sees at most one call per open interval per account.

Opening rule: `failure_threshold` consecutive outage failures (no success reported between
them, none more than `failure_window_s` after the previous one). Chosen over a failure ratio
in a window because
- a hard outage fails every call, so a run of N trips within the first N calls, at any
  traffic: 40 bookings over 5 minutes and 200 bookings a second alike. A ratio needs a minimum
  volume per window, which low traffic never reaches and high traffic reaches late;
- a partial failure (one booking in five gets a 500) must not stop an account whose other
  calls succeed: the successes reset the run, and ordinary retries handle the rest;
- it is one counter in Redis: no per-call sorted set to write and trim on the hot path.

Only outage failures count (`is_outage_failure`): 503, other 5xx, timeouts, network errors. A
429 means the provider is up and wants us slower (the rate limiter's business), a 409 that it
is busy with this booking, a 4xx refusal that it works: all of those are successes here.

Time is Redis' (every host agrees on it) unless a `clock` is given (tests, to be fast).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.metrics import safe_label

if TYPE_CHECKING:
    from worker.providers.base import Outcome
    from worker.settings import AccountConfig

DEFAULT_PREFIX = "ticketrelay:breaker"

# RETRY outcomes that say "the provider is not working" (worker/providers/base.py).
OUTAGE_ERRORS = frozenset({"provider_unavailable", "provider_error", "timeout", "network_error"})


class State(IntEnum):
    """The value of `ticketrelay_breaker_state`."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class Policy:
    failure_threshold: int = 5
    # A run of failures is forgotten after this long without another failure.
    failure_window_s: float = 60.0
    # The first open interval, then multiplied by `growth` after each failed probe, up to
    # `max_open_s`: 5, 10, 20, 40, 60, 60 ... s. So a long outage costs one call a minute per
    # account, and a recovery is noticed within a minute.
    open_s: float = 5.0
    max_open_s: float = 60.0
    growth: float = 2.0
    # A probe that neither succeeds nor fails within this is taken to be dead (its worker was
    # killed) and another caller may probe. Must exceed the account's call timeout.
    probe_lease_s: float = 30.0
    # Waiters are told T plus up to this fraction of the interval, at random, so that the
    # bookings parked during an outage do not all come back in the same instant.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0 < self.open_s <= self.max_open_s:
            raise ValueError("need 0 < open_s <= max_open_s")
        if self.growth < 1 or self.probe_lease_s <= 0 or self.failure_window_s <= 0 or self.jitter < 0:
            raise ValueError("growth >= 1, probe_lease_s > 0, failure_window_s > 0, jitter >= 0")


@dataclass(frozen=True)
class Permit:
    """Go ahead and call the provider. `probe`: this call decides whether the circuit closes;
    report its outcome (or `release` it when the call is not made after all)."""

    probe: bool = False
    token: str = ""


@dataclass(frozen=True)
class WaitUntil:
    """Do not call the provider; come back in `wait_s` seconds (at `at`, on the breaker's
    clock). The booking keeps its attempts."""

    at: float
    wait_s: float
    state: State


# --- the scripts -------------------------------------------------------------------------------
# Keys: the account's state hash and failure counter, the shared transitions hash. The state
# hash holds `state` (open | half_open; absent: closed), `open_until` and `interval` (ms), and,
# while a probe is out, `probe` (its token) and `probe_until` (its lease, ms).

_NOW = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"""

_GATE = (
    _NOW
    + """
local st_key, tr_key = KEYS[1], KEYS[3]
local token, lease, tr_half = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local st = redis.call('HGET', st_key, 'state')
if not st then return {'closed', tostring(now), '0'} end
local open_until = tonumber(redis.call('HGET', st_key, 'open_until') or '0')
local interval = tonumber(redis.call('HGET', st_key, 'interval') or '0')
if now < open_until then return {'open', tostring(now), tostring(open_until), tostring(interval)} end
local probe_until = tonumber(redis.call('HGET', st_key, 'probe_until') or '0')
if now < probe_until then
  -- A probe is out: wait for its verdict (at most its lease).
  return {'half_open', tostring(now), tostring(math.min(probe_until, now + interval)), tostring(interval)}
end
redis.call('HSET', st_key, 'probe', token, 'probe_until', tostring(now + lease))
if st == 'open' then
  redis.call('HSET', st_key, 'state', 'half_open')
  redis.call('HINCRBY', tr_key, tr_half, 1)
end
return {'probe', tostring(now), token}
"""
)

_REPORT = (
    _NOW
    + """
local st_key, fail_key, tr_key = KEYS[1], KEYS[2], KEYS[3]
local failure, token = ARGV[2] == '1', ARGV[3]
local threshold, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local base, cap, growth = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local tr_open, tr_closed = ARGV[9], ARGV[10]
local st = redis.call('HGET', st_key, 'state') or 'closed'
local is_probe = token ~= '' and token == redis.call('HGET', st_key, 'probe')
if not failure then
  if st == 'closed' then
    redis.call('DEL', fail_key)
    return {'closed', '0'}
  end
  if is_probe then
    redis.call('DEL', st_key, fail_key)
    redis.call('HINCRBY', tr_key, tr_closed, 1)
    return {'closed', '1'}
  end
  -- A call let through before the circuit opened: only the probe decides.
  return {st, '0'}
end
if st == 'closed' then
  -- The run on the breaker's clock (the key's expiry only cleans up).
  local last = tonumber(redis.call('HGET', fail_key, 'last') or '0')
  local n = 1
  if now - last <= window then n = tonumber(redis.call('HGET', fail_key, 'n') or '0') + 1 end
  redis.call('HSET', fail_key, 'n', n, 'last', tostring(now))
  redis.call('PEXPIRE', fail_key, math.ceil(window) + 60000)
  if n < threshold then return {'closed', '0'} end
  redis.call('DEL', fail_key)
  redis.call('HSET', st_key, 'state', 'open', 'open_until', tostring(now + base), 'interval', tostring(base))
  redis.call('HINCRBY', tr_key, tr_open, 1)
  return {'open', '1'}
end
if is_probe then
  local interval = tonumber(redis.call('HGET', st_key, 'interval') or tostring(base))
  interval = math.min(math.max(interval * growth, base), cap)
  redis.call('HDEL', st_key, 'probe', 'probe_until')
  redis.call('HSET', st_key, 'state', 'open', 'open_until', tostring(now + interval),
             'interval', tostring(interval))
  redis.call('HINCRBY', tr_key, tr_open, 1)
  return {'open', '1'}
end
-- A call let through before the circuit opened failed too: nothing new.
return {st, '0'}
"""
)

_RELEASE = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  return 1
end
return 0
"""


def _field(provider: str, account: str, to: State) -> str:
    return json.dumps([provider, account, to.name.lower()], separators=(",", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Breaker:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        policy: Policy | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.policy = policy or Policy()
        self.clock = clock
        self._rng = rng or random.Random()
        self._gate: Any = client.register_script(_GATE)
        self._report: Any = client.register_script(_REPORT)
        self._release: Any = client.register_script(_RELEASE)

    @property
    def transitions_key(self) -> str:
        return f"{self.prefix}:transitions"

    def keys(self, provider: str, account: str) -> list[str]:
        base = f"{self.prefix}:{provider}:{account}"
        return [f"{base}:state", f"{base}:fails", self.transitions_key]

    def _now_arg(self) -> str:
        return "" if self.clock is None else repr(self.clock() * 1000.0)

    def try_pass(self, provider: str, account: str, policy: Policy | None = None) -> Permit | WaitUntil:
        """One Redis round trip: a Permit (closed, or the one probe) or when to come back."""
        p = policy or self.policy
        token = uuid.uuid4().hex
        reply = self._gate(
            keys=self.keys(provider, account),
            args=[
                self._now_arg(),
                token,
                p.probe_lease_s * 1000.0,
                _field(provider, account, State.HALF_OPEN),
            ],
        )
        kind = _text(reply[0])
        if kind == "closed":
            return Permit()
        if kind == "probe":
            return Permit(probe=True, token=_text(reply[2]))
        now, until, interval = float(reply[1]), float(reply[2]), float(reply[3])
        spread = self._rng.uniform(0, p.jitter * interval) if interval > 0 else 0.0
        wait_ms = max(until - now, 0.0) + spread
        state = State.OPEN if kind == "open" else State.HALF_OPEN
        return WaitUntil(at=(now + wait_ms) / 1000.0, wait_s=wait_ms / 1000.0, state=state)

    def record(
        self, provider: str, account: str, permit: Permit, failure: bool, policy: Policy | None = None
    ) -> State | None:
        """Report the outcome of a call made under `permit`. Returns the state the circuit
        moved to, or None when it did not move (for a log line; the count is kept in Redis)."""
        p = policy or self.policy
        reply = self._report(
            keys=self.keys(provider, account),
            args=[
                self._now_arg(),
                "1" if failure else "0",
                permit.token,
                p.failure_threshold,
                p.failure_window_s * 1000.0,
                p.open_s * 1000.0,
                p.max_open_s * 1000.0,
                p.growth,
                _field(provider, account, State.OPEN),
                _field(provider, account, State.CLOSED),
            ],
        )
        if _text(reply[1]) != "1":
            return None
        return State.OPEN if _text(reply[0]) == "open" else State.CLOSED

    def release(self, provider: str, account: str, permit: Permit) -> None:
        """Give a probe permit back unused (the rate limiter said wait, the claim was lost), so
        that the next caller probes at once instead of after the lease."""
        if permit.probe and permit.token:
            self._release(keys=self.keys(provider, account)[:1], args=[permit.token])

    def _now_ms(self) -> float:
        if self.clock is not None:
            return self.clock() * 1000.0
        seconds, micros = self.client.time()
        return seconds * 1000.0 + micros / 1000.0

    def state(self, provider: str, account: str) -> State:
        return self.states([(provider, account)])[(provider, account)]

    def states(self, accounts: Iterable[tuple[str, str]]) -> dict[tuple[str, str], State]:
        """The state of each account, in one round trip (for the metrics exporter)."""
        pairs = list(accounts)
        pipe = self.client.pipeline(transaction=False)
        for provider, account in pairs:
            pipe.hmget(self.keys(provider, account)[0], ["state", "open_until"])
        replies = pipe.execute()
        now = self._now_ms()
        out: dict[tuple[str, str], State] = {}
        for pair, (st, open_until) in zip(pairs, replies, strict=True):
            if st is None:
                out[pair] = State.CLOSED
            elif _text(st) == "half_open" or now >= float(open_until or 0):
                # Open and past its interval: the next caller probes.
                out[pair] = State.HALF_OPEN
            else:
                out[pair] = State.OPEN
        return out

    def transitions(self) -> dict[tuple[str, str, str], int]:
        """(provider, account, to) -> how many times, since Redis was last emptied."""
        out: dict[tuple[str, str, str], int] = {}
        for name, value in self.client.hgetall(self.transitions_key).items():
            try:
                provider, account, to = json.loads(_text(name))
            except (ValueError, TypeError):
                continue
            out[(str(provider), str(account), str(to))] = int(value)
        return out

    def reset(self, provider: str, account: str) -> None:
        """Force the circuit closed (an operator who knows the provider is back)."""
        state_key, fail_key, _ = self.keys(provider, account)
        self.client.delete(state_key, fail_key)


# --- the plain functions the issue path calls ----------------------------------------------------


def is_outage_failure(outcome: Outcome) -> bool:
    """Does this outcome say the provider is not working? (Not: "this booking failed".)"""
    from worker.providers.base import OutcomeKind

    if outcome.kind is not OutcomeKind.RETRY:
        return False
    return outcome.error is not None and outcome.error.type in OUTAGE_ERRORS


def policy_for(account: AccountConfig, base: Policy) -> Policy:
    """The policy for one account: the probe's lease outlasts the account's own call timeout
    (twice it: the claim and the recording come on top), so a slow probe is not taken for a
    dead one and a second probe sent beside it."""
    lease = max(base.probe_lease_s, 2 * account.timeout_s)
    return base if lease == base.probe_lease_s else replace(base, probe_lease_s=lease)


def gate(breaker: Breaker, account: AccountConfig, policy: Policy | None = None) -> Permit | WaitUntil:
    """Before the claim (a wait must not spend an attempt or hold a lease) and before the rate
    limiter (a wait must not take a rate slot)."""
    return breaker.try_pass(account.provider, account.name, policy)


def report(
    breaker: Breaker, account: AccountConfig, permit: Permit, outcome: Outcome, policy: Policy | None = None
) -> State | None:
    """After the provider call, with its outcome. Returns the new state when it moved."""
    return breaker.record(account.provider, account.name, permit, is_outage_failure(outcome), policy)


# --- metrics ------------------------------------------------------------------------------------


class BreakerCollector(Collector):
    """`ticketrelay_breaker_state{provider,account}` (0 closed, 1 open, 2 half-open) and
    `ticketrelay_breaker_transitions_total{provider,account,to}`, read from Redis at scrape
    time like the rest of the exporter (worker/ops/metrics_server.py). Register it beside the
    TicketrelayCollector: `registry.register(BreakerCollector(breaker, accounts.keys()))`."""

    def __init__(self, breaker: Breaker, accounts: Iterable[tuple[str, str]]) -> None:
        self.breaker = breaker
        # Label values only from configuration, never from a message.
        self.accounts = sorted(set(accounts))

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            states = self.breaker.states(self.accounts)
            transitions = self.breaker.transitions()
        except (redis.ConnectionError, redis.TimeoutError):
            return  # ticketrelay_exporter_source_up{source="redis"} already says so
        gauge = GaugeMetricFamily(
            "ticketrelay_breaker_state",
            "Circuit breaker of a provider account: 0 closed (calls go through), 1 open (calls "
            "wait, the provider is not called), 2 half-open (one probe call decides).",
            labels=["provider", "account"],
        )
        for (provider, account), st in sorted(states.items()):
            gauge.add_metric([safe_label(provider), safe_label(account)], int(st))
        yield gauge
        counter = CounterMetricFamily(
            "ticketrelay_breaker_transitions",
            "Circuit breaker state changes by provider account and the state moved to (open, "
            "half_open, closed).",
            labels=["provider", "account", "to"],
        )
        # Every configured account, zeros included, so that increase() sees no series appear.
        for provider, account in self.accounts:
            for to in State:
                n = transitions.get((provider, account, to.name.lower()), 0)
                counter.add_metric([safe_label(provider), safe_label(account), to.name.lower()], n)
        yield counter
