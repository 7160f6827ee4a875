"""One booking through the real issue path against a provider simulator, in one in-doubt case,
judged from the simulator's ground truth.

The path is the product's: intake's validation writes the queued row (`validate_entry`,
`ledger.create_queued`), `worker.issuing.process` claims, calls and records it over an httpx
client whose transport is the in-process sandbox, and the step is repeated (the row made due
at once, backoff zero) until the row is final. A killed worker leaves its row in_progress; the
sweeper's query finds it once the lease ran out and it is re-driven like any other.

What the provider really did comes from `Sandbox.ground_truth()`, never from our code
derivation or our result: the suite holds the product to four rules (see `judge`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import fakeredis
import httpx
from sqlalchemy import Engine, update

from tests.conformance.combos import Combination
from tests.helpers import entry, envelope
from worker import issuing, ledger
from worker.devtools.sandbox.core import Sandbox
from worker.providers import PROVIDERS, build_client
from worker.settings import AccountConfig, Settings, sandbox_accounts
from worker.validation import Accepted, validate_entry

# Far more steps than any account's max_attempts: a row still active after them never ends.
MAX_STEPS = 40
PAST_KEY_LIFETIME_S = 73 * 3600  # e-guma forgets a key 72 h after its first request completed


class WorkerKilled(BaseException):
    """The worker process dies mid-call (SIGKILL): nothing after this point runs, not even the
    product's own `except Exception`."""


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line, for docs/providers.md
    fail_next: tuple[dict[str, Any], ...] = ()  # the sandbox's scripted faults, from the first request
    wire: str | None = None  # what happens to the first request on our side (Wire)
    cross_72h: bool = (
        False  # after the first step: the provider's clock and the row's first attempt 73 h back
    )


CASES: tuple[Case, ...] = (
    Case("clean", "no fault (the control: must be issued)"),
    Case(
        "drop",
        "the provider commits, the connection drops before the answer",
        ({"kind": "drop_after_create"},),
    ),
    Case("500", "the provider commits, then answers 500", ({"status": 500, "after_create": True},)),
    Case("502", "the provider commits, then a gateway answers 502", ({"status": 502, "after_create": True},)),
    Case("503", "the provider commits, then answers 503", ({"status": 503, "after_create": True},)),
    Case("timeout_unsent", "read timeout; the request never reached the provider", ({"kind": "timeout"},)),
    Case("timeout_sent", "read timeout after the provider committed", wire="timeout_after"),
    Case(
        "malformed",
        "the provider commits, a proxy garbles the 2xx answer",
        ({"kind": "malformed_after_create"},),
    ),
    Case(
        "killed_unsent",
        "worker killed before its request left (row in_progress, lease expired)",
        wire="kill_before",
    ),
    Case("killed_sent", "worker killed after the provider committed, before recording", wire="kill_after"),
    Case(
        "72h_in_doubt",
        "answer lost, then the retry comes 73 h later (provider clock and first attempt)",
        ({"kind": "drop_after_create"},),
        cross_72h=True,
    ),
    Case(
        "72h_after_429",
        "a 429 (nothing created), then the retry comes 73 h later",
        ({"status": 429},),
        cross_72h=True,
    ),
)
CASE_BY_NAME = {c.name: c for c in CASES}


class Wire:
    """The client's transport: the sandbox in-process, with one scripted event for the next
    request (what the sandbox's own faults cannot do: a timeout after the provider processed
    the request, a worker killed before or after sending)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.next: str | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        event, self.next = self.next, None
        if event == "kill_before":
            raise WorkerKilled
        response = self.sandbox.handle(request)
        if event == "kill_after":
            raise WorkerKilled
        if event == "timeout_after":
            raise httpx.ReadTimeout("read timeout after the provider answered", request=request)
        return response


@dataclass
class Run:
    """One booking's outcome and what the provider did for it."""

    provider: str
    combination: str
    case: str
    status: str
    attempts: int
    error_type: str | None
    result_codes: list[str | None]
    provider_codes: list[str]  # codes of the tickets the provider issued for this booking
    creations: dict[str, int]  # this booking's creations per identity (ground truth)
    creation_requests: int
    violations: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{self.provider} [{self.combination}] case {self.case}: {self.status} after "
            f"{self.attempts} attempt(s) ({self.error_type}); result codes {self.result_codes}; "
            f"provider issued {self.provider_codes}; creations {self.creations} in "
            f"{self.creation_requests} request(s): " + "; ".join(self.violations)
        )


def _truth(sandbox: Sandbox, provider: str) -> dict[str, Any]:
    # A deep copy: the tally's dicts are live.
    return json.loads(json.dumps(sandbox.ground_truth()[provider]))


def judge(run: Run, before: dict[str, Any], after: dict[str, Any], row_tickets: list[dict[str, Any]]) -> None:
    """The four rules, from the ground truth (`before`: the provider before this booking).

    1. at most one creation per booking: no identity created twice, no second create request
       that created anything, no ticket code issued twice by the provider;
    2. never `failed` while the provider holds active tickets of this booking;
    3. never a code in our result that the provider did not issue for this booking;
    4. `issued` only when the tickets exist, all of them, and the result holds as many."""
    old_ids = {t["id"] for t in before["issued"]}
    mine = [t for t in after["issued"] if t["id"] not in old_ids]
    active = [t for t in mine if t["status"] == "active"]
    v = run.violations
    for identity, count in run.creations.items():
        if count > 1:
            v.append(f"rule 1: identity {identity} created {count} times")
    if run.creation_requests > 1:
        v.append(f"rule 1: {run.creation_requests} requests created tickets for one booking")
    doubled = [c for c, n in Counter(t["code"] for t in after["issued"]).items() if n > 1]
    if doubled:
        v.append(f"rule 1: ticket codes issued twice: {doubled}")
    if run.status == "failed" and active:
        v.append(f"rule 2: failed while {len(active)} ticket(s) of this booking are active")
    foreign = [c for c in run.result_codes if c is not None and c not in run.provider_codes]
    if foreign:
        v.append(f"rule 3: result codes the provider did not issue for this booking: {foreign}")
    if run.status == "issued":
        if not active:
            v.append("rule 4: issued, but the provider holds no active ticket of this booking")
        elif len(row_tickets) != len(active):
            v.append(f"rule 4: issued with {len(row_tickets)} ticket(s), the provider issued {len(active)}")


class Bench:
    """A ledger, the product's issue path and one simulator per run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sandbox = Sandbox(seed=1)
        self.wire = Wire(self.sandbox)
        url = engine.url.render_as_string(hide_password=False)
        # Backoff zero: retries are due at once; the driver makes every row due between steps.
        self.settings = Settings(database_url=url, max_countdown_s=30, backoff_base_s=0.0, backoff_cap_s=0.0)
        self.accounts = sandbox_accounts("http://sandbox", self.settings)
        self.intake_accounts = sandbox_accounts("http://sandbox")

        def factory(account: AccountConfig) -> httpx.Client:
            return build_client(account, transport=httpx.MockTransport(self.wire.handle))

        self.deps = issuing.Deps(
            engine=engine,
            redis=fakeredis.FakeRedis(),
            settings=self.settings,
            accounts=self.accounts,
            clients=issuing.ClientCache(factory),
        )
        self._count = 0
        self._runs = 0

    # --- the way intake writes rows ------------------------------------------------------

    def accept(self, provider: str) -> str:
        self._count += 1
        env = envelope(provider, f"conf-{id(self):x}-{self._count}")
        verdict = validate_entry(entry(env), self.settings, self.intake_accounts)
        assert isinstance(verdict, Accepted), verdict
        assert ledger.create_queued(self.engine, verdict.booking())
        return verdict.idempotency_key

    # --- driving a row to its end --------------------------------------------------------

    def _set_row(self, key: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(ledger.T).where(ledger.C.idempotency_key == key).values(**values))

    def drive(self, key: str, case: Case | None = None) -> tuple[Any, list[str]]:
        """Process `key` until its row is final; returns the row and any driver problem."""
        problems: list[str] = []
        crossed = False
        row = ledger.get(self.engine, key)
        for _ in range(MAX_STEPS):
            try:
                issuing.process(self.deps, key)
            except WorkerKilled:
                # The lease runs out; the sweeper's query must then find the row.
                self._set_row(key, lease_until=ledger.utcnow() - timedelta(seconds=1))
                if key not in ledger.stale_keys(self.engine, self.settings.stale_after_s, 1000):
                    problems.append("a killed worker's row was not found by the sweeper's query")
            row = ledger.get(self.engine, key)
            assert row is not None
            if ledger.is_final(row):
                return row, problems
            if case is not None and case.cross_72h and not crossed:
                crossed = True
                self.sandbox.advance_clock(PAST_KEY_LIFETIME_S)
                first = ledger.as_utc(row.first_attempt_at)
                assert first is not None, "the first claim dates the row"
                self._set_row(key, first_attempt_at=first - timedelta(seconds=PAST_KEY_LIFETIME_S))
            if row.status == "retrying":
                self._set_row(key, next_attempt_at=ledger.utcnow())
        problems.append(f"row still {row.status if row else '?'} after {MAX_STEPS} steps")
        return row, problems

    def run(self, combination: Combination, case: Case) -> Run:
        provider = combination.provider
        # A seed of its own per run: the ledger is shared by the runs, and a provider never hands
        # out the same order id twice (the issue path asks whether an id is another row's).
        self._runs += 1
        switches = {provider: combination.switch_map}
        self.sandbox = self.wire.sandbox = Sandbox(seed=self._runs, switches=switches)
        self.wire.next = None
        for adapter in PROVIDERS.values():
            adapter.forget()
        problems: list[str] = []
        if combination.start == "warm":
            neighbour, _ = self.drive(self.accept(provider))
            if neighbour.status != "issued":
                problems.append(f"the clean neighbour booking ended {neighbour.status}")
        before = _truth(self.sandbox, provider)
        key = self.accept(provider)
        if case.fail_next:
            self.sandbox.set_faults(provider, fail_next=[dict(f) for f in case.fail_next])
        self.wire.next = case.wire
        row, driven = self.drive(key, case)
        after = _truth(self.sandbox, provider)
        old_ids = {t["id"] for t in before["issued"]}
        creations = {
            identity: count - before["creations"].get(identity, 0)
            for identity, count in after["creations"].items()
            if count > before["creations"].get(identity, 0)
        }
        requests = sum(
            count - before["creations_by_request"].get(k, 0)
            for k, count in after["creations_by_request"].items()
        )
        tickets = list(row.tickets or [])
        run = Run(
            provider=provider,
            combination=combination.id,
            case=case.name,
            status=str(row.status),
            attempts=int(row.attempts),
            error_type=row.error_type,
            result_codes=[t.get("code") for t in tickets],
            provider_codes=[t["code"] for t in after["issued"] if t["id"] not in old_ids],
            creations=creations,
            creation_requests=requests,
            violations=problems + driven,
        )
        judge(run, before, after, tickets)
        return run
