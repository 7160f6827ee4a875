"""Provider outages through the real issue path (issue 11): every provider answers 503 for 5
minutes, or for an hour, while 40 bookings arrive; with the default settings (8 attempts,
backoff from 1 s, the breaker on) every booking must end issued exactly once after the
recovery, and the providers must see about one probe per open interval per account during the
outage, not every booking's retries.

Time is compressed, not waited: a virtual clock drives the breaker (its injected clock) and the
ledger's "now" (ledger.utcnow), and a small event loop plays the Celery countdowns and the
sweeper (every sweep_interval_s) in order. The provider is the in-process sandbox, its faults
switched on and off at the outage's start and end. SQLite and PostgreSQL.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine

from schemas.statuses import Status
from tests.helpers import accept_booking
from worker import issuing, ledger
from worker.breaker import Breaker, Policy, State
from worker.devtools.sandbox.core import Sandbox
from worker.providers import build_client
from worker.results import result_from_row
from worker.settings import AccountConfig, Settings, sandbox_accounts

PROVIDERS = ("remypass", "fourvenues", "fourvenues_channels", "eguma")
# After a 503 (which may have been processed: the adapters keep such a booking in doubt) a
# booking is re-sent only once the provider proves it created nothing. For both Fourvenues APIs
# that takes a behaviour the docs leave open: the sent qr_codes become the tickets' codes
# (Integrations), GET /tickets applies its qr_code filter (channels-service). With the
# sandbox's defaults (neither) no absence can be proved, and the adapters leave those
# bookings in needs_review rather than risk a second ticket (docs/outages.md, known limits).
PROVABLE = {
    "fourvenues": {"sent_qr_code": "becomes_code"},
    "fourvenues_channels": {"list_filters": "applied"},
}
START = datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp()


class VirtualClock:
    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


@dataclass
class Sim:
    """The issue path on a virtual clock: `at(t, key)` runs the issue task for `key` at t, as a
    Celery countdown would; the sweeper runs every sweep_interval_s."""

    deps: issuing.Deps
    sandbox: Sandbox
    clock: VirtualClock
    breaker: Breaker
    events: list[tuple[float, int, str]] = field(default_factory=list)
    seq: Iterator[int] = field(default_factory=itertools.count)
    next_sweep: float = START
    runs: int = 0

    def at(self, t: float, key: str) -> None:
        heapq.heappush(self.events, (t, next(self.seq), key))

    def accept(self, provider: str, mid: str) -> str:
        key = accept_booking(self.deps.engine, provider, mid)
        self.at(self.clock.t, key)
        return key

    def run_until(self, t_end: float, stop: Any = None) -> None:
        """Play events and sweeps in time order up to `t_end` (or until `stop()` is true)."""
        interval = self.deps.settings.sweep_interval_s
        # A test that moved the clock forward by days: one sweep now, not one per 15 s missed.
        self.next_sweep = max(self.next_sweep, self.clock.t)
        while True:
            t_event = self.events[0][0] if self.events else float("inf")
            t_next = min(t_event, self.next_sweep)
            if t_next > t_end:
                self.clock.t = max(self.clock.t, t_end)
                return
            self.clock.t = max(self.clock.t, t_next)
            if t_next == self.next_sweep and self.next_sweep <= t_event:
                self.next_sweep += interval
                issuing.sweep(self.deps, lambda key: self.at(self.clock.t, key))
            else:
                _, _, key = heapq.heappop(self.events)
                self.runs += 1
                follow = issuing.process(self.deps, key)
                if follow.countdown is not None:
                    self.at(self.clock.t + follow.countdown, key)
            if stop is not None and stop():
                return

    def requests(self) -> dict[str, int]:
        return {p: int(v["requests"]) for p, v in self.sandbox.ground_truth().items()}


def make_sim(engine: Engine, client: redis.Redis, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Sim:
    clock = VirtualClock()
    monkeypatch.setattr(ledger, "utcnow", clock.now)
    # The defaults of issue 11: an accounts file with only base_url and key.
    s = Settings(database_url=str(engine.url), consumer_name="sim-worker", **settings)
    sandbox = Sandbox(seed=11, switches=PROVABLE)
    accounts = sandbox_accounts("http://sandbox", s)

    def factory(account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(sandbox.handle))

    policy = Policy(
        failure_threshold=s.breaker_failure_threshold,
        open_s=s.breaker_open_s,
        max_open_s=s.breaker_max_open_s,
    )
    # A prefix of its own: the SQLite and PostgreSQL runs share the test session's Redis.
    breaker = Breaker(
        client, prefix=f"test:breaker:{uuid.uuid4().hex}", policy=policy, clock=clock, rng=random.Random(5)
    )
    deps = issuing.Deps(
        engine=engine,
        redis=client,
        settings=s,
        accounts=accounts,
        clients=issuing.ClientCache(factory),
        breaker=breaker,
    )
    return Sim(deps=deps, sandbox=sandbox, clock=clock, breaker=breaker)


def creations_of(sim: Sim, provider: str, row: Any) -> list[int]:
    """How many times the provider created what this booking asked for, per identity."""
    truth = sim.sandbox.ground_truth()[provider]["creations"]
    if provider == "remypass":
        return [truth.get((row.payload or {})["bookingId"], 0)]
    if provider == "eguma":
        return [truth.get(row.idempotency_key, 0)]
    # Fourvenues: per ticket, the qr_code sent (the producer's, or the one stored by the claim).
    tickets = (row.payload or {}).get("tickets") or []
    stored = row.qr_codes or [None] * len(tickets)
    return [truth.get(t.get("qr_code") or code, 0) for t, code in zip(tickets, stored, strict=True)]


def max_probes(outage_s: float, policy: Policy) -> int:
    """Calls one account can receive during an outage of `outage_s`: the run that opens the
    circuit, then one probe per open interval (5, 10, 20, 40, 60, 60 ... s)."""
    t, interval, probes = 0.0, policy.open_s, 0
    while t < outage_s:
        t += interval
        probes += 1
        interval = min(interval * policy.growth, policy.max_open_s)
    return policy.failure_threshold + probes


def play_outage(sim: Sim, outage_s: float, bookings: int = 40) -> dict[str, Any]:
    """Every provider 503s for `outage_s`; `bookings` arrive evenly over its first 5 minutes
    (or over all of it, when shorter). Then the providers recover.

    First one booking per provider goes through, as on any running system: a Fourvenues worker
    learns from a real answer that the qr_codes it sends become the tickets' codes, and only
    then may a code not found prove that an attempt in doubt created nothing (the adapter's
    rule; a worker that has never seen an answer leaves such a booking in needs_review)."""
    warm = [sim.accept(p, f"warm-{p}") for p in PROVIDERS]
    sim.run_until(
        sim.clock.t + 60,
        stop=lambda: all(ledger.is_final(r) for r in ledger.get_many(sim.deps.engine, warm).values()),
    )
    assert {r.status for r in ledger.get_many(sim.deps.engine, warm).values()} == {Status.ISSUED}
    sim.sandbox.set_faults("*", error_503_rate=1.0)
    down_at = sim.clock.t
    before = sim.requests()
    arrive_over = min(outage_s, 300.0)
    keys: dict[str, str] = {}
    for i in range(bookings):
        sim.run_until(down_at + arrive_over * i / bookings)
        provider = PROVIDERS[i % len(PROVIDERS)]
        keys[sim.accept(provider, f"outage-{int(outage_s)}-{i}")] = provider
    sim.run_until(down_at + outage_s)
    during = {p: n - before[p] for p, n in sim.requests().items()}
    states = {p: sim.breaker.state(p, "default") for p in PROVIDERS}
    rows_during = ledger.get_many(sim.deps.engine, list(keys))

    sim.sandbox.set_faults("*")
    up_at = sim.clock.t

    def all_final() -> bool:
        rows = ledger.get_many(sim.deps.engine, list(keys))
        return all(ledger.is_final(r) for r in rows.values())

    sim.run_until(up_at + 3600, stop=all_final)
    return {
        "keys": keys,
        "during": during,
        "states": states,
        "rows_during": rows_during,
        "drain_s": sim.clock.t - up_at,
        "rows": ledger.get_many(sim.deps.engine, list(keys)),
    }


def assert_all_issued_once(sim: Sim, out: dict[str, Any]) -> None:
    for key, provider in out["keys"].items():
        row = out["rows"][key]
        assert row.status == Status.ISSUED, (provider, row.status, row.error_type, row.error_message)
        counts = creations_of(sim, provider, row)
        assert counts and set(counts) == {1}, (provider, counts)
        # The booking's budget was hardly touched: only the calls that opened the circuit count.
        assert row.attempts - row.attempts_base <= sim.deps.settings.breaker_failure_threshold + 1
        assert result_from_row(row).revision == 1


@pytest.mark.parametrize("outage_s", [300.0, 3600.0], ids=["5min", "1h"])
def test_a_provider_outage_ends_with_every_booking_issued_once(
    engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, outage_s: float
) -> None:
    sim = make_sim(engine, redis_client, monkeypatch)
    out = play_outage(sim, outage_s)

    # During the outage: nobody gave up, every circuit was open or probing, bookings waited.
    assert all(not ledger.is_final(r) for r in out["rows_during"].values())
    assert all(st != State.CLOSED for st in out["states"].values()), out["states"]
    bound = max_probes(outage_s, sim.breaker.policy)
    for provider in PROVIDERS:
        # A call here and there, not every booking's retries: 10 bookings with 8 attempts each
        # would be 80 calls in the first few minutes without the breaker.
        assert 1 <= out["during"][provider] <= bound, (provider, out["during"], bound)

    assert_all_issued_once(sim, out)
    # Parked waits are at most the longest open interval plus its jitter (72 s), then one sweep.
    assert out["drain_s"] <= 120, out["drain_s"]
    print(
        f"outage {outage_s:.0f}s: requests during it {out['during']} (bound {bound} each); "
        f"all issued {out['drain_s']:.1f}s after recovery; {sim.runs} task runs"
    )


def test_without_the_breaker_the_same_outage_fails_bookings(
    engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: issue 11 as it was. Without the breaker the 5-minute outage spends the
    budgets, so the test above would fail if the breaker were not wired in."""
    sim = make_sim(engine, redis_client, monkeypatch)
    sim.deps.breaker = None
    out = play_outage(sim, 300.0, bookings=8)
    ended = {out["rows"][k].status for k in out["keys"]}
    assert ended & {Status.FAILED, Status.NEEDS_REVIEW}, ended
    assert sum(out["during"].values()) > 8 * 5


def test_a_booking_older_than_give_up_after_s_gives_up_by_time(
    engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the account's give_up_after_s the booking stops, attempts or not; within it, the
    outage leaves its budget alone (the time limit, not the attempts, ends a long outage)."""
    sim = make_sim(engine, redis_client, monkeypatch, default_give_up_after_s=600.0)
    sim.sandbox.set_faults("eguma", error_503_rate=1.0)
    key = sim.accept("eguma", "too-old")
    sim.run_until(START + 1200, stop=lambda: ledger.is_final(ledger.get(engine, key)))  # type: ignore[arg-type]
    row = ledger.get(engine, key)
    assert row is not None and ledger.is_final(row)
    # 503 may have created tickets (adapters keep it in doubt): needs_review, never failed.
    assert row.status in (Status.NEEDS_REVIEW, Status.FAILED)
    assert row.error_type == "retries_exhausted"
    assert (row.error_message or "").startswith("gave up after 10 min unfinished")
    assert row.attempts - row.attempts_base < 8  # not by attempts
    elapsed = (ledger.as_utc(row.completed_at) - ledger.as_utc(row.created_at)).total_seconds()  # type: ignore[operator]
    assert 600 <= elapsed <= 600 + 120, elapsed


def test_an_account_may_set_its_own_give_up_after_s(tmp_path: Any) -> None:
    from worker.settings import load_accounts

    path = tmp_path / "accounts.toml"
    path.write_text(
        '[eguma.default]\nbase_url = "https://x.example"\napi_key = "k"\n'
        '[eguma.slow]\nbase_url = "https://x.example"\napi_key = "k"\ngive_up_after_s = 3600\n'
    )
    accounts = load_accounts(path, Settings(default_give_up_after_s=7200))
    assert accounts[("eguma", "default")].give_up_after_s == 7200
    assert accounts[("eguma", "slow")].give_up_after_s == 3600
    assert load_accounts(path)[("eguma", "default")].give_up_after_s == 86400


def test_a_failed_probe_and_a_wait_are_recorded_as_history_not_charged(
    engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One booking through a short outage: the calls that opened the circuit are charged and in
    the attempt history; the waits are no attempts at all; the failed probes are in the history
    (marked probe) but not charged."""
    sim = make_sim(engine, redis_client, monkeypatch)
    sim.sandbox.set_faults("eguma", error_503_rate=1.0)
    key = sim.accept("eguma", "history")
    sim.run_until(START + 120)
    row = ledger.get(engine, key)
    assert row is not None and row.status == Status.RETRYING
    history = ledger.attempts_of(engine, key)
    assert [a["attempt"] for a in history] == list(range(1, row.attempts + 1))
    probes = [a for a in history if a["probe"]]
    assert probes and all(a["outcome"] == "retry" and a["http_status"] == 503 for a in history)
    assert row.attempts - row.attempts_base == len(history) - len(probes)
    sim.sandbox.set_faults("eguma")
    sim.run_until(START + 400, stop=lambda: ledger.is_final(ledger.get(engine, key)))  # type: ignore[arg-type]
    history = ledger.attempts_of(engine, key)
    assert history[-1]["outcome"] == "issued" and history[-1]["probe"]
    assert ledger.get(engine, key).status == Status.ISSUED  # type: ignore[union-attr]
