"""The work of one cancel (CONTRACT.md 1.1), as a plain function: find the booking, wait for
it to be final, let exactly one cancel of it call the provider's void, record, publish.

    cancel of a booking that is ...   ends
    not known (after GRACE_S)          rejected, no call
    queued / in_progress / retrying    waits (retrying, re-enqueued; the sweeper backs it up)
    failed / rejected                  cancelled, no call (nothing exists at the provider)
    needs_review                       needs_review, no call
    issued                             the void: cancelled (and the booking too) | failed |
                                       needs_review; retries as for issuing
    already voided by another cancel   that cancel's outcome, no call

The booking's `cancel_key` (set once, compare-and-set) names the one cancel that may call the
void; any other cancel of the same booking waits for that one and copies its outcome. The
voiding cancel's own row is leased and counted like an issue (ledger.claim), and an attempt
after one whose answer was lost is in doubt: the canceller looks each id up before voiding it
again (worker/providers/cancel_pipeline.py). The Celery task around this only schedules the
follow-up (tasks/cancel.py); the issue task hands any cancel row it is given to `step`, so the
sweeper's re-drives and intake's re-enqueues reach here too.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from schemas.result import ResultError, Ticket
from schemas.statuses import ACTIVE_STATUSES, Status
from schemas.table import TicketIssuance
from worker import ledger
from worker.backoff import next_delay
from worker.issuing import (
    Deps,
    Next,
    Step,
    exhausted,
    finish,
    log_context,
    process,
    publish_finals,
    retry_later,
)
from worker.providers.cancel_pipeline import CancelAttempt, CancelKind, CancelOutcome, get_canceller
from worker.settings import AccountConfig

log = logging.getLogger("ticketrelay.cancel")

# A cancel whose booking has no row yet may have overtaken it (another intake consumer, the
# same read): it waits this long after its own arrival before it is rejected as unknown.
GRACE_S = 30.0
# How often a waiting cancel looks at its booking again.
WAIT_S = 2.0


def process_cancel(deps: Deps, key: str) -> Next:
    """One cancel key: the issue task's batch machinery, which hands cancel rows to `step`."""
    return process(deps, key)


def step(deps: Deps, row: TicketIssuance) -> Step:
    """One run of a cancel row: what to do next, and the row to publish when it became final."""
    if ledger.is_final(row):
        return Next(), (row if row.callback_sent_at is None else None)
    now = ledger.utcnow()
    why_not = ledger.claimable(row, now, early_s=0.2)
    if why_not is not None:
        return Next(), None
    booking = ledger.find_booking(deps.engine, row.provider, row.account, row.cancels or "")
    if booking is None:
        created = ledger.as_utc(row.created_at) or now
        if now - created < timedelta(seconds=GRACE_S):
            return _wait(deps, row, "booking_not_seen")
        return _settle(
            deps,
            row,
            Status.REJECTED,
            ResultError(
                type="unknown_booking",
                message=f"no booking with message_id {row.cancels!r} was accepted for this provider "
                "and account; nothing was cancelled",
            ),
        )
    if booking.operation == "cancel":
        error = ResultError(
            type="invalid_cancel", message="the message_id named in `cancels` is a cancel, not a booking"
        )
        return _settle(deps, row, Status.REJECTED, error)
    if booking.status in ACTIVE_STATUSES:
        return _wait(deps, row, "booking_in_flight")
    if booking.status in (Status.FAILED, Status.REJECTED):
        # Nothing exists at the provider: there is nothing to void.
        return _settle(deps, row, Status.CANCELLED, None)
    if booking.status == Status.NEEDS_REVIEW:
        error = ResultError(
            type="booking_needs_review",
            message="the booking needs review (its tickets may exist and nothing confirms it); "
            "settle it first, then cancel at the provider if needed. Nothing was voided",
        )
        return _settle(deps, row, Status.NEEDS_REVIEW, error)

    holder = booking.cancel_key
    if holder is None and booking.status == Status.ISSUED:
        holder = ledger.take_cancel(deps.engine, booking.idempotency_key, row.idempotency_key)
    if holder != row.idempotency_key:
        return _follow(deps, row, booking, holder)
    if booking.status == Status.CANCELLED:
        # Ours, and already marked: a run that stopped between the two records.
        return _settle(
            deps, row, Status.CANCELLED, None, tickets=booking.tickets, reference=booking.provider_reference
        )
    return _void(deps, row, booking)


def _follow(deps: Deps, row: TicketIssuance, booking: TicketIssuance, holder: str | None) -> Step:
    """Another cancel voids this booking: wait for it, then end as it did, without a call."""
    leader = ledger.get(deps.engine, holder) if holder is not None else None
    if leader is None:
        if booking.status == Status.CANCELLED:
            return _settle(deps, row, Status.CANCELLED, None, tickets=booking.tickets)
        lost = ResultError(
            type="unconfirmed", message="the booking's cancel is not recorded; check at the provider"
        )
        return _settle(deps, row, Status.NEEDS_REVIEW, lost)
    if not ledger.is_final(leader):
        return _wait(deps, row, "other_cancel_in_flight")
    log.info("cancel settled by an earlier cancel", extra={"event": "cancel_follows", **log_context(row)})
    return _settle(
        deps,
        row,
        Status(leader.status),
        ledger.row_error(leader),
        tickets=leader.tickets,
        reference=leader.provider_reference,
    )


def _wait(deps: Deps, row: TicketIssuance, reason: str) -> Step:
    delay = min(WAIT_S, deps.settings.max_countdown_s)
    log.info("cancel waits", extra={"event": "cancel_waits", "reason": reason, **log_context(row)})
    if not ledger.cancel_wait(deps.engine, row.idempotency_key, delay):
        return Next(), None
    return Next(countdown=delay), None


def _settle(
    deps: Deps,
    row: TicketIssuance,
    status: Status,
    error: ResultError | None,
    *,
    tickets: list[dict[str, object]] | None = None,
    reference: str | None = None,
) -> Step:
    recorded = ledger.finish_without_call(
        deps.engine,
        row.idempotency_key,
        status,
        error,
        tickets=list(tickets) if tickets else None,
        provider_reference=reference,
    )
    return _final(recorded)


def _final(recorded: TicketIssuance | None) -> Step:
    """issuing.finish, logged as a cancel."""
    return finish(recorded, log)


def _give_up(
    deps: Deps, row: TicketIssuance, token: str | None, attempts: int, account: AccountConfig,
    in_doubt: bool, last: ResultError | None, note: ledger.AttemptNote | None = None,
) -> TicketIssuance | None:  # fmt: skip
    # Out of attempts while a void may have gone through: needs_review, never a `failed` that
    # says "the booking is still valid".
    status = Status.NEEDS_REVIEW if in_doubt else Status.FAILED
    error = exhausted(
        f"gave up cancelling after {attempts - row.attempts_base} of {account.max_attempts} attempts", last
    )
    if token is None:
        return ledger.finish_without_call(deps.engine, row.idempotency_key, status, error, in_doubt=in_doubt)
    return ledger.record_cancel_final(
        deps.engine, row.idempotency_key, token, status, error, in_doubt, note=note
    )


def _void(deps: Deps, row: TicketIssuance, booking: TicketIssuance) -> Step:
    key = row.idempotency_key
    account = deps.accounts.get((row.provider, row.account))
    canceller = get_canceller(row.provider)
    missing = canceller.adapter.missing_credentials(account) if account is not None else None
    if account is None or missing is not None:
        reason = missing or f"no account {row.account!r} is configured for provider {row.provider}"
        return _settle(deps, row, Status.FAILED, ResultError(type="configuration_error", message=reason))
    in_doubt = row.in_doubt or row.status == Status.IN_PROGRESS
    if row.attempts - row.attempts_base >= account.max_attempts:
        return _final(_give_up(deps, row, None, row.attempts, account, in_doubt, ledger.row_error(row)))

    token = uuid.uuid4().hex
    if not ledger.claim(deps.engine, row, token, deps.settings.lease_s):
        return Next(), None
    attempt = CancelAttempt(
        idempotency_key=key,
        account=account,
        number=row.attempts + 1,
        in_doubt=in_doubt,
        booking_reference=booking.provider_reference,
        tickets=[Ticket(**t) for t in booking.tickets or []],
        booking_payload=booking.payload,
        booking_created_at=ledger.as_utc(booking.created_at),
        options=dict(row.payload or {}),
    )
    called_at = ledger.utcnow()
    started = time.perf_counter()
    outcome = canceller.cancel(deps.clients.get(account), attempt)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    told = outcome.error or outcome.note
    # The attempt history (ticket_attempts) of the cancel's key: its messages are built from
    # scrubbed provider text only (cancel_pipeline).
    note = ledger.AttemptNote(
        number=attempt.number,
        started_at=called_at,
        duration_ms=elapsed_ms,
        worker=deps.settings.consumer_name,
        message=told.message if told is not None else None,
    )
    log.info(
        "provider void call",
        extra={
            "event": "provider_void",
            "outcome": outcome.kind.value,
            "reconciled": outcome.reconciled,
            "duration_ms": elapsed_ms,
            **log_context(row, attempt=attempt.number),
        },
    )
    return _record(deps, row, booking, token, attempt, outcome, note)


def _record(
    deps: Deps,
    row: TicketIssuance,
    booking: TicketIssuance,
    token: str,
    attempt: CancelAttempt,
    outcome: CancelOutcome,
    note: ledger.AttemptNote,
) -> Step:
    key = row.idempotency_key
    in_doubt = attempt.in_doubt or outcome.may_have_voided
    if outcome.kind is CancelKind.CANCELLED:
        # The booking first: a run that stops before the cancel's own record finds the booking
        # cancelled on its next run and settles without a call.
        corrected = ledger.mark_booking_cancelled(deps.engine, booking.idempotency_key, key)
        if corrected is not None:
            try:
                publish_finals(deps, [corrected])
            except Exception:
                # Recorded, not announced: the sweeper publishes final rows not marked sent.
                log.exception("booking's corrected result not published", extra={"event": "publish_failed"})
        recorded = ledger.record_cancel_final(
            deps.engine,
            key,
            token,
            Status.CANCELLED,
            outcome.note,
            False,
            tickets=booking.tickets,
            provider_reference=booking.provider_reference,
            note=note,
        )
        return _final(recorded)
    error = outcome.error or ResultError(type="unknown", message="no error detail", retryable=True)
    if outcome.kind is CancelKind.FAILED:
        return _final(
            ledger.record_cancel_final(deps.engine, key, token, Status.FAILED, error, in_doubt, note=note)
        )
    if outcome.kind is CancelKind.NEEDS_REVIEW:
        return _final(
            ledger.record_cancel_final(deps.engine, key, token, Status.NEEDS_REVIEW, error, True, note=note)
        )
    account = attempt.account
    if attempt.number - row.attempts_base >= account.max_attempts:
        return _final(_give_up(deps, row, token, attempt.number, account, in_doubt, error, note))
    delay = next_delay(attempt.number, account.backoff_base_s, account.backoff_cap_s, outcome.retry_after_s)
    if ledger.record_retry(deps.engine, key, token, error, in_doubt, delay, note=note) is None:
        return Next(), None
    return retry_later(deps, delay)
