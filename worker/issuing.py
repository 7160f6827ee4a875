"""The work of one issue task, as a plain function: claim, call the provider with the stable
key, record, publish. The Celery task around it only schedules the follow-up."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import httpx
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from schemas.result import ResultError
from schemas.statuses import Status
from schemas.table import TicketIssuance
from worker import breaker, ledger, metrics, outage
from worker.backoff import next_delay
from worker.breaker import Breaker
from worker.providers import build_client, get_provider
from worker.providers.base import Attempt, Outcome, OutcomeKind
from worker.ratelimit import Limit, Permit, RateLimiter
from worker.redaction import payload_echoes, scrub
from worker.results import publish_results, result_from_row
from worker.settings import AccountConfig, Settings
from worker.webhooks import outbox

log = logging.getLogger("ticketrelay.issue")

# Redis or the database went away, or no connection came free within
# TICKETRELAY_DATABASE_POOL_TIMEOUT_S (a refused connect has waited in worker.db by then): the
# sweeper re-drives the key later; no stack trace needed.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OperationalError, PoolTimeout, OSError)


@dataclass
class Deps:
    engine: Engine
    redis: redis.Redis
    settings: Settings
    accounts: dict[tuple[str, str], AccountConfig]
    clients: ClientCache
    limiter: RateLimiter | None = None
    # The per-account circuit breaker (docs/outages.md); None: calls are never held back.
    breaker: Breaker | None = None


class ClientCache:
    """One httpx.Client per account per thread: each thread keeps its own keep-alive
    connection. One client shared by all threads cost more CPU than the call itself once many
    calls were in flight: httpcore scans its whole pool for every request, and with idle
    connections that scan is quadratic (measured: worker CPU per booking 4.5 -> 5.6 ms over
    a 100,000-booking run as the shared pool grew)."""

    def __init__(self, factory: Callable[[AccountConfig], httpx.Client] = build_client) -> None:
        self._factory = factory
        self._local = threading.local()
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    def get(self, account: AccountConfig) -> httpx.Client:
        mine: dict[tuple[str, str], httpx.Client] | None = getattr(self._local, "clients", None)
        if mine is None:
            mine = self._local.clients = {}
        key = (account.provider, account.name)
        client = mine.get(key)
        if client is None:
            client = mine[key] = self._factory(account)
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            client.close()


@dataclass(frozen=True)
class Next:
    """What the task should do after this run: nothing, or run again after `countdown`."""

    countdown: float | None = None


def log_context(row: TicketIssuance, **more: object) -> dict[str, object]:
    """The fields every log line about a row carries (issue and cancel alike)."""
    return {
        "idempotency_key": row.idempotency_key,
        "provider": row.provider,
        "account": row.account,
        "attempt": row.attempts,
        **more,
    }


# What one key's run produced: the follow-up, and the row to publish when it became final.
Step = tuple[Next, TicketIssuance | None]
# How a batch runs its keys: in turn (the default) or on the worker's shared thread pool.
MapFn = Callable[[Callable[[TicketIssuance], Step], list[TicketIssuance]], list[Step]]


def in_turn(fn: Callable[[TicketIssuance], Step], rows: list[TicketIssuance]) -> list[Step]:
    return [fn(row) for row in rows]


def publish_finals(deps: Deps, rows: list[TicketIssuance]) -> None:
    """The results of a batch in one Redis round trip and one UPDATE. A crash between the two
    only means the sweeper publishes them again (results are at least once, by contract)."""
    if not rows:
        return
    results = [(row.reply_to, result_from_row(row)) for row in rows]
    publish_results(deps.redis, results, deps.settings.results_maxlen)
    # The webhook outbox queues the callbacks in the transaction that marks them published.
    ledger.mark_callbacks_sent(
        deps.engine,
        [row.idempotency_key for row in rows],
        also=lambda conn: outbox.enqueue_results(conn, deps.accounts, [r for _stream, r in results]),
    )


def _give_up(
    deps: Deps,
    row: TicketIssuance,
    token: str | None,
    why: str,
    in_doubt: bool,
    last: ResultError | None,
    note: ledger.AttemptNote | None = None,
) -> TicketIssuance | None:
    # Out of attempts (or of time) while an earlier call may have created tickets (a timeout,
    # a 500, a 409 "in progress"): that is exactly `needs_review`, never a `failed` that says
    # "no ticket". A re-drive with the same key (ticketrelay retry / reissue) can still
    # confirm it later.
    status = Status.NEEDS_REVIEW if in_doubt else Status.FAILED
    if last is not None and last.type == outage.CIRCUIT_OPEN:
        last = None  # our own placeholder, not a provider's answer
    return ledger.record_final_error(
        deps.engine, row.idempotency_key, token, status, exhausted(why, last), in_doubt, note=note
    )


def process(deps: Deps, key: str, bulk: bool = False) -> Next:
    """One key: claim, call, record, publish."""
    return process_many(deps, [key], bulk=bulk).get(key, Next())


def process_many(deps: Deps, keys: list[str], bulk: bool = False, run: MapFn = in_turn) -> dict[str, Next]:
    """A batch of keys: one SELECT for all of them, each key claimed, called and recorded on
    its own (by `run`, concurrently in the worker), then the final ones published together.
    A key that fails here is logged and left to the sweeper; it never stops the others."""
    unique = list(dict.fromkeys(keys))
    rows = ledger.get_many(deps.engine, unique)
    for key in unique:
        if key not in rows:
            log.warning("unknown key", extra={"event": "unknown_key", "idempotency_key": key})
    todo = [rows[key] for key in unique if key in rows]
    steps = run(lambda row: _guarded(deps, row, bulk), todo)
    finals = [final for _next, final in steps if final is not None]
    try:
        publish_finals(deps, finals)
    except Exception:
        # Recorded but not announced: the sweeper publishes rows whose callback_sent_at is empty.
        log.exception("results not published", extra={"event": "publish_failed", "count": len(finals)})
    return {row.idempotency_key: nxt for row, (nxt, _final) in zip(todo, steps, strict=True)}


def _guarded(deps: Deps, row: TicketIssuance, bulk: bool) -> Step:
    try:
        return _step(deps, row, bulk)
    except Exception as exc:
        log.error(
            "key not processed; the sweeper will re-drive it",
            extra={"event": "internal_error", "error": type(exc).__name__, **log_context(row)},
            exc_info=not isinstance(exc, TRANSIENT),
        )
        return Next(), None


def _step(deps: Deps, row: TicketIssuance, bulk: bool) -> Step:
    if row.operation == "cancel":
        # A cancel row (1.1) reaches the issue task too (the sweeper, an intake re-enqueue):
        # it is never issued, worker.cancelling does its work.
        from worker import cancelling

        return cancelling.step(deps, row)
    key = row.idempotency_key
    if ledger.is_final(row):
        return Next(), (row if row.callback_sent_at is None else None)
    why_not = ledger.claimable(row, ledger.utcnow())
    if why_not is not None:
        log.info("skipped", extra={"event": "skipped", "reason": why_not, **log_context(row)})
        return Next(), None

    account = deps.accounts.get((row.provider, row.account))
    missing = get_provider(row.provider).missing_credentials(account) if account is not None else None
    if account is None or missing is not None:
        # Configuration changed since intake accepted it: a clear, final answer.
        reason = missing or f"no account {row.account!r} is configured for provider {row.provider}"
        error = ResultError(type="configuration_error", message=reason)
        return finish(ledger.record_final_error(deps.engine, key, None, Status.FAILED, error, row.in_doubt))

    # Out of attempts, or of time. A row in doubt past its time still gets its call: the
    # provider is asked what became of it (reconciliation) before it ends needs_review, and
    # gives up after that call if it too ends in a retry.
    started_at = ledger.drive_started_at(deps.engine, row)
    in_doubt = row.in_doubt or row.status == Status.IN_PROGRESS
    why = outage.give_up_reason(
        row, account.max_attempts, None if in_doubt else account.give_up_after_s, started_at=started_at
    )
    if why is not None:
        return finish(_give_up(deps, row, None, why, in_doubt, ledger.row_error(row)))

    # The account's circuit, before the rate limiter (a wait takes no rate slot) and before the
    # claim (a wait spends no attempt and holds no lease): during an outage the booking is
    # parked in `retrying` and the provider is not called.
    policy = breaker.policy_for(account, deps.breaker.policy) if deps.breaker is not None else None
    bpermit = breaker.gate(deps.breaker, account, policy) if deps.breaker is not None else breaker.Permit()
    if isinstance(bpermit, breaker.WaitUntil):
        wait = outage.circuit_open_error(row.provider, row.account, bpermit.wait_s)
        ledger.park(deps.engine, row, bpermit.wait_s, wait)  # False: another worker has it; fine
        log.info(
            "circuit open",
            extra={"event": "circuit_open", "wait_s": round(bpermit.wait_s, 1), **log_context(row)},
        )
        # Longer than a Celery countdown may be: the sweeper picks it up once due.
        return (
            Next(countdown=bpermit.wait_s) if bpermit.wait_s <= deps.settings.max_countdown_s else Next()
        ), None

    # The account's shared rate limit, before the claim: waiting must not hold the lease. Both
    # wait in the thread a little (bulk on its own pool, so live threads are never taken);
    # past that the key comes back later as a new message.
    limit = Limit(account.rate_limit_per_s, account.max_concurrent)
    permit = (
        deps.limiter.acquire(row.provider, row.account, limit, bulk=bulk, max_wait_s=1.0 if bulk else 2.0)
        if deps.limiter is not None
        else Permit(True, 0.0)
    )
    if not permit.granted:
        _release_probe(deps, row, bpermit)
        return Next(countdown=max(permit.wait_s, 0.05)), None
    try:
        return _claim_and_call(deps, row, account, permit, bpermit, policy, started_at)
    finally:
        if deps.limiter is not None:
            deps.limiter.release(row.provider, row.account, permit)


def _release_probe(deps: Deps, row: TicketIssuance, bpermit: breaker.Permit) -> None:
    """A probe permit not used after all goes back, so the next caller probes at once."""
    if deps.breaker is not None and bpermit.probe:
        deps.breaker.release(row.provider, row.account, bpermit)


def _claim_and_call(
    deps: Deps,
    row: TicketIssuance,
    account: AccountConfig,
    permit: Permit,
    bpermit: breaker.Permit,
    policy: breaker.Policy | None,
    started_at: datetime | None,
) -> Step:
    key = row.idempotency_key
    token = uuid.uuid4().hex
    provider = get_provider(row.provider)
    # Codes are made once, before the first call, and stored by the claim that counts it; a row
    # that has made any call keeps what it has (stored codes, or none: the old derivation).
    new_codes = provider.initial_codes(row.payload) if row.attempts == 0 and row.qr_codes is None else None
    if not ledger.claim(deps.engine, row, token, deps.settings.lease_s, qr_codes=new_codes):
        _release_probe(deps, row, bpermit)
        log.info("lost claim", extra={"event": "skipped", "reason": "claimed_elsewhere", **log_context(row)})
        return Next(), None
    in_doubt = row.in_doubt or row.status == Status.IN_PROGRESS
    attempt = Attempt(
        idempotency_key=key,
        payload=row.payload or {},
        account=account,
        number=row.attempts + 1,
        in_doubt=in_doubt,
        # A row from before first_attempt_at was recorded: its creation is an earlier bound.
        first_attempt_at=ledger.as_utc(row.first_attempt_at or row.created_at) if row.attempts else None,
        qr_codes=new_codes if new_codes is not None else row.qr_codes,
        # One indexed read, only for a key in doubt (rare): the history outlives the last error.
        answered_5xx=in_doubt and row.attempts > 0 and ledger.answered_5xx(deps.engine, key),
        known_elsewhere=partial(ledger.reference_elsewhere, deps.engine, row.provider, row.account, key=key),
    )
    permit.wait_for_slot()  # a paced (bulk) permit: its slot, now that the row is ours
    called_at = ledger.utcnow()
    started = time.perf_counter()
    outcome = provider.issue(deps.clients.get(account), attempt)
    elapsed = time.perf_counter() - started
    if deps.breaker is not None:
        # Before recording: the circuit must learn of the outage even if the write then fails;
        # and a Redis error here must not lose the outcome of a call that was made.
        try:
            moved = breaker.report(deps.breaker, account, bpermit, outcome, policy)
        except TRANSIENT as exc:
            moved = None
            log.warning(
                "breaker not told", extra={"event": "breaker_unreachable", "error": type(exc).__name__}
            )
        if moved is not None:
            event = "circuit_opened" if moved == breaker.State.OPEN else "circuit_closed"
            log.warning(event.replace("_", " "), extra={"event": event, **log_context(row)})
    note = ledger.AttemptNote(
        number=attempt.number,
        started_at=called_at,
        duration_ms=round(elapsed * 1000, 1),
        worker=deps.settings.consumer_name,
        message=_scrubbed(account, row, outcome),
        probe=bpermit.probe,
    )
    return _record(deps, row, token, attempt, outcome, elapsed, note, bpermit, started_at)


def _scrubbed(account: AccountConfig, row: TicketIssuance, outcome: Outcome) -> str | None:
    """The attempt's error for the history: adapters already clean their messages; scrubbed
    again here with this account's secrets and this booking's personal data, since the history
    keeps every attempt's message, not only the last."""
    if outcome.error is None:
        return None
    secrets = [s.get_secret_value() for s in (account.api_key, account.integration_id, account.secret) if s]
    return scrub(outcome.error.message, secrets=secrets, echoes=payload_echoes(row.payload), limit=1024)


def _record(
    deps: Deps,
    row: TicketIssuance,
    token: str,
    attempt: Attempt,
    outcome: Outcome,
    elapsed: float,
    note: ledger.AttemptNote | None = None,
    bpermit: breaker.Permit | None = None,
    started_at: datetime | None = None,
) -> Step:
    key = row.idempotency_key
    ctx = log_context(
        row,
        attempt=attempt.number,
        outcome=outcome.kind.value,
        duration_ms=round(elapsed * 1000, 1),
        reconciled=outcome.reconciled,
    )
    if outcome.error is not None:
        ctx.update(error_type=outcome.error.type, http_status=outcome.error.http_status)
    log.info("provider call", extra={"event": "provider_call", **ctx})
    metrics.provider_call(deps.redis, deps.settings, row.provider, row.account, outcome, elapsed)
    in_doubt = attempt.in_doubt or outcome.may_have_created
    error = outcome.error or ResultError(type="unknown", message="no error detail", retryable=True)

    recorded: TicketIssuance | None
    if outcome.kind == OutcomeKind.ISSUED:
        recorded = ledger.record_issued(
            deps.engine, key, token, outcome.tickets, outcome.provider_reference, note=note
        )
    elif outcome.kind == OutcomeKind.FAILED:
        recorded = ledger.record_final_error(
            deps.engine, key, token, Status.FAILED, error, in_doubt, note=note
        )
    elif outcome.kind == OutcomeKind.NEEDS_REVIEW:
        recorded = ledger.record_final_error(
            deps.engine,
            key,
            token,
            Status.NEEDS_REVIEW,
            error,
            True,
            tickets=outcome.tickets,
            provider_reference=outcome.provider_reference,
            note=note,
        )
    else:
        account = attempt.account
        if outcome.error is not None and outcome.error.http_status == 429 and deps.limiter is not None:
            # The provider's limit is lower than ours: slow the whole account down for a while.
            deps.limiter.penalise(row.provider, row.account, for_s=max(30.0, outcome.retry_after_s or 0.0))
        # A failed probe is a call made, not one charged to this booking: the provider is down
        # (docs/outages.md). Only the calls that opened the circuit are charged.
        uncharged = bpermit is not None and bpermit.probe and breaker.is_outage_failure(outcome)
        charged = attempt.number - row.attempts_base - (1 if uncharged else 0)
        start = started_at or ledger.as_utc(row.created_at)
        why = outage.give_up_after(charged, account.max_attempts, account.give_up_after_s, start)
        if why is not None:
            recorded = _give_up(deps, row, token, why, in_doubt, error, note)
        else:
            # On charged attempts: a booking probed ten times must not wait the backoff cap
            # once the provider is back.
            delay = next_delay(
                max(charged, 1), account.backoff_base_s, account.backoff_cap_s, outcome.retry_after_s
            )
            retried = ledger.record_retry(
                deps.engine, key, token, error, in_doubt, delay, note=note, charge=not uncharged
            )
            if retried is None:
                log.warning("lease lost before recording", extra={"event": "lease_lost", **ctx})
                return Next(), None
            return retry_later(deps, delay)
    if recorded is None:
        log.warning("lease lost before recording", extra={"event": "lease_lost", **ctx})
        return Next(), None
    return finish(recorded)


def retry_later(deps: Deps, delay: float) -> Step:
    """The follow-up of a recorded retry. Longer waits are parked in next_attempt_at for the
    sweeper: a Celery countdown longer than the visibility timeout would be delivered twice."""
    return (Next(countdown=delay) if delay <= deps.settings.max_countdown_s else Next()), None


def exhausted(why: str, last: ResultError | None) -> ResultError:
    """The error of a row that ran out of attempts (or of time): `why`, then the last error."""
    detail = f" (last error: {last.type}: {last.message})" if last is not None else ""
    return ResultError(
        type="retries_exhausted",
        message=f"{why}{detail}",
        http_status=last.http_status if last is not None else None,
        retryable=True,
    )


def finish(row: TicketIssuance | None, logger: logging.Logger = log) -> Step:
    """A row that is final, as recorded (no second read), goes out with the batch's results."""
    if row is not None and ledger.is_final(row):
        logger.info("final", extra={"event": "final", "status": row.status, **log_context(row)})
        return Next(), row
    return Next(), None


def sweep(deps: Deps, enqueue: Callable[[str], None]) -> dict[str, int]:
    """Re-drive rows that stopped moving (bookings parked during an outage for longer than a
    Celery countdown included), publish results that were never sent, and keep the attempt
    history within its retention."""
    s = deps.settings
    keys = ledger.stale_keys(deps.engine, s.stale_after_s, s.sweep_batch)
    for key in keys:
        enqueue(key)
    rows = ledger.unpublished(deps.engine, grace_s=min(5.0, s.stale_after_s), limit=s.sweep_batch)
    publish_finals(deps, rows)
    pruned = ledger.prune_attempts(deps.engine, s.attempts_retention_s, limit=s.sweep_batch)
    if keys or rows or pruned:
        log.info(
            "sweep",
            extra={"event": "sweep", "redriven": len(keys), "republished": len(rows), "pruned": pruned},
        )
    return {"redriven": len(keys), "republished": len(rows)}
