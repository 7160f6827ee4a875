"""The one cancel pipeline every provider runs, and the hooks a provider's canceller fills in.

    check credentials -> the ids to void (passes, tickets, the booking) -> for each:
    (in doubt, or the provider needs it) look it up first -> void -> read the answer

A provider module only translates (worker/providers/<name>.py, its `canceller`): which ids a
booking's void needs, the void request, the lookup that says whether an id is already void,
and how its refusals read. Retrying, leasing and recording stay with worker/cancelling.py.

Exactly one void call per booking: worker/cancelling.py lets one cancel of a booking call (the
booking's cancel_key); an attempt whose answer was lost is "in doubt" and looks each id up
before calling again, so an id already void is never voided twice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx

from schemas.result import ResultError, Ticket
from worker.providers.base import (
    Outcome,
    OutcomeKind,
    account_secrets,
    classify_response,
    error_detail,
    scrub,
)
from worker.providers.pipeline import Adapter
from worker.settings import AccountConfig


class CancelKind(StrEnum):
    CANCELLED = "cancelled"  # every id of the booking is void at the provider
    RETRY = "retry"  # try again later (same cancel)
    FAILED = "failed"  # the provider refused: the booking stays issued
    NEEDS_REVIEW = "needs_review"  # part may be void and nothing confirms what


@dataclass
class CancelOutcome:
    kind: CancelKind
    error: ResultError | None = None
    # For CANCELLED: what was done, where the provider's void is not a plain void (a refund).
    note: ResultError | None = None
    retry_after_s: float | None = None
    # Could this call (or an earlier one) have voided something? The next attempt looks up.
    may_have_voided: bool = False
    reconciled: bool = False


@dataclass(frozen=True)
class CancelAttempt:
    """What a canceller may use: the cancel's key and account, and what the booking's row
    says about what was issued."""

    idempotency_key: str
    account: AccountConfig
    number: int
    in_doubt: bool
    booking_reference: str | None
    tickets: list[Ticket]
    booking_payload: dict[str, Any] | None
    booking_created_at: datetime | None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CancelCall:
    client: httpx.Client
    attempt: CancelAttempt
    secrets: tuple[str, ...]

    @property
    def account(self) -> AccountConfig:
        return self.attempt.account


@dataclass(frozen=True)
class Lookup:
    """What the provider says of one id: void already, or not (with what it showed)."""

    void: bool
    found: dict[str, Any] | None = None


def cancel_retry(
    type_: str,
    message: str,
    *,
    may_have_voided: bool,
    http_status: int | None = None,
    retry_after_s: float | None = None,
) -> CancelOutcome:
    return CancelOutcome(
        CancelKind.RETRY,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=True),
        retry_after_s=retry_after_s,
        may_have_voided=may_have_voided,
    )


def cancel_failed(type_: str, message: str, *, http_status: int | None = None) -> CancelOutcome:
    return CancelOutcome(
        CancelKind.FAILED,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=False),
    )


def cancel_review(type_: str, message: str, *, http_status: int | None = None) -> CancelOutcome:
    return CancelOutcome(
        CancelKind.NEEDS_REVIEW,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=False),
        may_have_voided=True,
    )


def from_outcome(outcome: Outcome, *, lookup: bool = False) -> CancelOutcome:
    """An issuing Outcome of a transport problem or a classified answer, as a cancel's."""
    error = outcome.error or ResultError(type="unknown", message="no error detail", retryable=True)
    if outcome.kind is OutcomeKind.RETRY:
        # A lookup voids nothing; a void call that may have arrived may have voided.
        may = False if lookup else outcome.may_have_created
        return cancel_retry(
            error.type,
            error.message,
            may_have_voided=may,
            http_status=error.http_status,
            retry_after_s=outcome.retry_after_s,
        )
    if lookup:
        return cancel_review(
            "unconfirmed",
            f"{error.message} An earlier void call may have gone through and the lookup cannot "
            "confirm it, so it is not called again: check at the provider.",
            http_status=error.http_status,
        )
    return cancel_failed(error.type, error.message, http_status=error.http_status)


class Canceller:
    """Base of every provider's canceller: hooks below `# --- hooks`, `cancel` is shared."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @property
    def label(self) -> str:
        return self.adapter.label

    # --- the pipeline --------------------------------------------------------------------

    def cancel(self, client: httpx.Client, attempt: CancelAttempt) -> CancelOutcome:
        """Void everything the booking issued. Never raises for an HTTP or network problem."""
        problem = self.adapter.missing_credentials(attempt.account)
        if problem is not None:
            return cancel_failed("auth_error", f"{self.label}: {problem}. Nothing was sent to the provider.")
        targets = self.targets(attempt)
        if isinstance(targets, CancelOutcome):
            return targets
        call = CancelCall(client=client, attempt=attempt, secrets=account_secrets(attempt.account))
        reconciled = False
        for voided_now, target in enumerate(targets):
            result = self._void_one(call, target)
            if isinstance(result, CancelOutcome):
                if voided_now and result.kind is CancelKind.RETRY:
                    result.may_have_voided = True  # part is void: look up before calling again
                if voided_now and result.kind is CancelKind.FAILED and result.error is not None:
                    return cancel_review(
                        result.error.type,
                        f"{result.error.message} {voided_now} of {len(targets)} were voided before "
                        "this refusal: settle the rest at the provider.",
                        http_status=result.error.http_status,
                    )
                return result
            reconciled = reconciled or result == "reconciled"
        return CancelOutcome(CancelKind.CANCELLED, note=self.note(attempt), reconciled=reconciled)

    def _void_one(self, call: CancelCall, target: str) -> CancelOutcome | str:
        found: dict[str, Any] | None = None
        if self.must_look_up(call.attempt):
            seen = self.lookup(call, target)
            if isinstance(seen, CancelOutcome):
                return seen
            if seen.void:
                return "reconciled"
            found = seen.found
        request = self.void_request(call, target, found)
        if isinstance(request, CancelOutcome):
            return request
        method, path, kwargs = request
        response = self.adapter.request(
            call.client, call.account, method, path, label=f"{self.label} void", **kwargs
        )
        if isinstance(response, Outcome):
            return from_outcome(response)
        detail = error_detail(response, self.adapter.error_keys)
        if response.is_success:
            return "voided"
        if self.is_already_void(response, detail):
            return "reconciled"
        return self.refusal(call, response, detail)

    # --- hooks -------------------------------------------------------------------------------

    def targets(self, attempt: CancelAttempt) -> list[str] | CancelOutcome:
        """The provider ids one void call each: by default the booking's ticket ids."""
        ids = [t.ticket_id for t in attempt.tickets if t.ticket_id]
        if not ids or len(ids) != len(attempt.tickets):
            return cancel_review(
                "unknown_ticket_ids",
                f"{self.label}: the booking's ticket ids are not all known (it was reconciled "
                "without them), so they cannot be voided here: void them at the provider.",
            )
        return ids

    def must_look_up(self, attempt: CancelAttempt) -> bool:
        """Look an id up before voiding it? Default: when an earlier void may have arrived."""
        return attempt.in_doubt

    def lookup(self, call: CancelCall, target: str) -> Lookup | CancelOutcome:
        return cancel_review(
            "unconfirmed",
            f"{self.label}: an earlier void call may have gone through and there is no lookup "
            "to confirm it, so it is not called again: check at the provider.",
        )

    def void_request(
        self, call: CancelCall, target: str, found: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]] | CancelOutcome:
        raise NotImplementedError

    def lookup_refused(self, call: CancelCall, answer: httpx.Response) -> CancelOutcome:
        """A lookup answered with an error: retry what is transient, else nothing confirms."""
        detail = error_detail(answer, self.adapter.error_keys)
        outcome = classify_response(answer, label=f"{self.label} lookup", detail=detail, secrets=call.secrets)
        return from_outcome(outcome, lookup=True)

    def is_already_void(self, response: httpx.Response, detail: str | None) -> bool:
        """Is this refusal the provider's "already void" for what we asked?"""
        return False

    def refusal(self, call: CancelCall, response: httpx.Response, detail: str | None) -> CancelOutcome:
        """A non-2xx answer to a void: the default table, worded for a cancel."""
        outcome = classify_response(response, label=f"{self.label} void", detail=detail, secrets=call.secrets)
        if outcome.kind is OutcomeKind.FAILED and outcome.error is not None:
            err = outcome.error
            reason = scrub(detail, secrets=call.secrets) or f"HTTP {response.status_code}"
            if err.type in ("validation_error", "not_found", "provider_rejected"):
                return cancel_failed(
                    "cancel_refused",
                    f"{self.label} refused the void (HTTP {response.status_code}): {reason}",
                    http_status=response.status_code,
                )
        return from_outcome(outcome)

    def note(self, attempt: CancelAttempt) -> ResultError | None:
        """What the result should say was done, when the void is not a plain void."""
        return None


_MODULES = {
    "remypass": "worker.providers.remypass",
    "fourvenues": "worker.providers.fourvenues",
    "fourvenues_channels": "worker.providers.fourvenues_channels",
    "eguma": "worker.providers.eguma",
}


def get_canceller(provider: str) -> Canceller:
    """The canceller of `provider` (each provider module's `canceller`)."""
    try:
        module = _MODULES[provider]
    except KeyError:
        raise KeyError(f"unknown provider {provider!r}") from None
    found = importlib.import_module(module).canceller
    assert isinstance(found, Canceller)
    return found
