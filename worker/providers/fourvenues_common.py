"""What the two Fourvenues adapters share: ticket codes, reconciling by code, and reading a
created answer without inventing a ticket.

Neither API documents idempotency. Every ticket carries a stable qr_code (the producer's, or
the one stored in the row before the first call, see codes.py); after an attempt that may
have created tickets, each code is looked up before anything is re-sent:

- every code found -> ISSUED, reconciled;
- every code proven absent (only an API with a documented not-found answer can prove it)
  -> send;
- some found, some absent -> NEEDS_REVIEW (a re-send would duplicate the found ones);
- a lookup that cannot confirm either way -> RETRY while in doubt (ends NEEDS_REVIEW), or
  NEEDS_REVIEW at once where retrying cannot help.

A created answer lists the tickets the provider confirms. Only those, and codes a lookup
confirms, go into a result: when the answer holds fewer tickets than were asked for (the
Integrations docs answer one object for `quantity: 2`), the missing codes are looked up; what
stays unconfirmed makes the booking NEEDS_REVIEW with the confirmed tickets. This rests on
the undocumented assumption that a sent qr_code becomes the ticket's code; a provider that
ignores it is seen in the answer (its codes are not ours), and its tickets are reported with
the codes it gave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from schemas.result import Ticket
from worker.providers import codes
from worker.providers.base import (
    Attempt,
    Outcome,
    OutcomeKind,
    failed,
    issued,
    json_or_none,
    needs_review,
    object_list,
    retry,
)
from worker.providers.pipeline import Adapter, Call

_DUPLICATE_CODE = re.compile(
    r"already\s+exist|duplicat|already\s+(?:used|in\s+use|taken)|unique", re.IGNORECASE
)


def provider_time(response: httpx.Response) -> datetime | None:
    """When the provider answered, by its own clock: the HTTP Date header (RFC 9110 has every
    server with a clock send one). None when absent or unreadable."""
    value = response.headers.get("date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _took(response: httpx.Response) -> timedelta:
    try:
        return response.elapsed
    except RuntimeError:  # a response built by hand (tests) was never timed
        return timedelta(0)


@dataclass(frozen=True)
class Found:
    ticket: dict[str, Any]


@dataclass(frozen=True)
class Absent:
    """The provider's own not-found answer for this code."""


@dataclass(frozen=True)
class Unsettled:
    """Neither found nor proven absent: the outcome to report (RETRY or NEEDS_REVIEW)."""

    outcome: Outcome


LookupResult = Found | Absent | Unsettled


def json_amount(value: object) -> float | None:
    """A JSON number as a float (a refund amount, a price); None for anything else, booleans
    included."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def ticket_objects(data: object) -> list[dict[str, Any]] | None:
    """The tickets of an answer's `data`: one object (the Integrations docs) or a list (the
    channels docs); None when it is neither or empty."""
    if isinstance(data, dict):
        return [data]
    return object_list(data) or None


def expected_count(payload: dict[str, Any]) -> int:
    """How many tickets the request asks for: `quantity`, or the ticket objects if more."""
    tickets = payload.get("tickets")
    objects = len(tickets) if isinstance(tickets, list) else 0
    quantity = payload.get("quantity")
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        return max(quantity, objects)
    return objects


class FourvenuesAdapter(Adapter):
    """The shared half of both Fourvenues adapters; each fills in its lookup and its fields."""

    error_keys = ("error", "message")

    # --- hooks of the two APIs -----------------------------------------------------------

    def lookup_code(self, call: Call, code: str) -> LookupResult:
        raise NotImplementedError

    def ticket_code(self, raw: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def normalise(self, raw: dict[str, Any]) -> Ticket:
        raise NotImplementedError

    def reference(self, raw: list[dict[str, Any]]) -> str | None:
        return None

    def absence_is_proof(self, call: Call) -> bool | None:
        """Does "every sent code is absent" prove the earlier attempt created nothing? True:
        yes; False: no (the provider gives its tickets codes of its own); None: not known yet."""
        return True

    def learn(self, call: Call, answered: list[dict[str, Any]]) -> None:
        """What a created answer teaches about this account (e.g. whether sent codes are kept)."""

    def find_purchase(self, call: Call) -> Outcome | None:
        """Another way to find what a lost attempt created, when codes cannot; None: not found."""
        return None

    def confirm_purchase(
        self,
        call: Call,
        answered: list[dict[str, Any]],
        answered_at: datetime | None = None,
        took: timedelta = timedelta(0),
    ) -> list[dict[str, Any]]:
        """The other tickets of the purchase a created answer belongs to, as the provider lists
        them (the answer may show one ticket for several). `answered_at`: the answer's own
        time by the provider's clock (its Date header), None when it sent none; `took`: how
        long our request ran."""
        return []

    # --- codes -------------------------------------------------------------------------------

    def initial_codes(self, payload: dict[str, Any] | None) -> list[str | None] | None:
        return codes.initial_codes(payload)

    def new_generation_refusal(self, payload: dict[str, Any] | None) -> str | None:
        refusal = super().new_generation_refusal(payload)
        if refusal is not None:
            return refusal
        tickets = (payload or {}).get("tickets") or []
        if any(isinstance(t, dict) and t.get("qr_code") for t in tickets):
            return (
                f"{self.name}: the producer set qr_codes, so a new generation would send the same codes again"
            )
        return None

    def prepare(self, attempt: Attempt) -> dict[str, Any]:
        return codes.with_codes(attempt.payload, attempt.idempotency_key, attempt.qr_codes)

    def codes_of(self, body: dict[str, Any]) -> list[str]:
        return codes.sent_codes(body)

    # --- reconcile -----------------------------------------------------------------------------

    def reconcile(self, call: Call) -> Outcome | None:
        if not call.codes:
            return needs_review(
                "unconfirmed",
                f"{self.label}: an earlier attempt may have created the tickets and the request "
                "holds no ticket code to look them up by. Not re-sent: settle at the provider.",
            )
        found: list[dict[str, Any]] = []
        absent: list[str] = []
        for code in call.codes:
            result = self.lookup_code(call, code)
            if isinstance(result, Unsettled):
                return result.outcome
            if isinstance(result, Found):
                found.append(result.ticket)
            else:
                absent.append(code)
        expected = expected_count(call.body)
        if not found and absent:
            proof = self.absence_is_proof(call)
            if proof is True:
                return None  # every code proven absent: the earlier attempt created nothing
            listed = self.find_purchase(call)
            if listed is not None:
                return listed
            why = (
                "is not yet known to give tickets the qr_codes we send"
                if proof is None
                else "gives its tickets codes of its own instead of the qr_codes we send"
            )
            message = (
                f"{self.label}: an earlier attempt may have created the tickets; none of the sent "
                f"codes is found, but this account {why}, so that proves nothing. Not re-sent, "
                "to avoid duplicates."
            )
            if proof is None:
                # Another booking's answer may show soon whether the codes are kept.
                return retry("unconfirmed", message, may_have_created=True)
            return needs_review("unconfirmed", message + " Settle at the provider.")
        tickets = [self.normalise(t) for t in found]
        if not absent and len(found) >= expected:
            return issued(tickets, self.reference(found), reconciled=True)
        missing = (
            f"{len(absent)} of the sent codes do not exist"
            if absent
            else f"the request asked for {expected} tickets and only {len(found)} codes were sent"
        )
        return needs_review(
            "partial_issue",
            f"{self.label}: an earlier attempt created {len(found)} of the {expected} tickets of "
            f"this booking ({missing}). Not re-sent, to avoid duplicates: settle at the provider. "
            "The tickets listed are the ones the provider confirmed.",
            tickets=tickets,
            provider_reference=self.reference(found) if found else None,
        )

    # --- created -------------------------------------------------------------------------------

    def parse_created(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        status = response.status_code
        body = json_or_none(response)
        if isinstance(body, dict) and body.get("success") is False:
            return failed(
                "provider_rejected",
                f"{self.label} answered HTTP {status} with success=false: "
                f"{call.said(detail) or 'no details'}",
                http_status=status,
            )
        raw = ticket_objects(body.get("data") if isinstance(body, dict) else None)
        if raw is None:
            # A 2xx means the tickets may exist; the next attempt looks the codes up first.
            return retry(
                "malformed_response",
                f"{self.label} answered HTTP {status} with a body that holds no ticket; the "
                "tickets may exist. The next attempt looks them up by code.",
                http_status=status,
                may_have_created=True,
            )
        self.learn(call, raw)
        expected = expected_count(call.body)
        confirmed = list(raw)
        if len(confirmed) >= expected:
            return issued([self.normalise(t) for t in confirmed], self.reference(confirmed))
        # Fewer tickets in the answer than asked for: first the provider's own listing of the
        # purchase, then the sent codes it lacks, one by one.
        known_ids = {text(t.get("_id")) for t in confirmed} - {None}
        for ticket in self.confirm_purchase(call, confirmed, provider_time(response), _took(response)):
            if text(ticket.get("_id")) not in known_ids:
                confirmed.append(ticket)
                known_ids.add(text(ticket.get("_id")))
        if len(confirmed) >= expected:
            return issued([self.normalise(t) for t in confirmed], self.reference(confirmed))
        answered = {self.ticket_code(t) for t in confirmed}
        unconfirmed: list[str] = []
        unsettled: Outcome | None = None
        for code in call.codes:
            if code in answered:
                continue
            result = self.lookup_code(call, code)
            if isinstance(result, Found):
                confirmed.append(result.ticket)
            else:
                unconfirmed.append(code)
                if isinstance(result, Unsettled) and unsettled is None:
                    unsettled = result.outcome
        tickets = [self.normalise(t) for t in confirmed]
        reference = self.reference(confirmed)
        if len(confirmed) >= expected:
            return issued(tickets, reference)
        if unsettled is not None and unsettled.kind is OutcomeKind.RETRY and len(unconfirmed) > 0:
            # The lookups may work a moment later: the next attempt looks every code up.
            return retry(
                "lookup_unavailable",
                f"{self.label} created the booking but answered {len(raw)} of {expected} "
                "tickets, and the others could not be looked up now. The next attempt looks "
                "every code up; nothing is re-sent.",
                http_status=status,
                may_have_created=True,
            )
        if unconfirmed:
            why = f"{len(unconfirmed)} sent code(s) could not be confirmed by a lookup"
        else:
            why = (
                f"the other {expected - len(confirmed)} were asked for by quantity without a "
                "ticket object, so Fourvenues gave them codes of its own that no lookup by code "
                "can find"
            )
        return needs_review(
            "unconfirmed_tickets",
            f"{self.label} answered HTTP {status} with {len(raw)} ticket(s) for {expected} asked "
            f"for; {len(confirmed)} are confirmed and {why}. The result lists only confirmed "
            "tickets; settle the rest at the provider.",
            http_status=status,
            tickets=tickets,
            provider_reference=reference,
        )

    # --- duplicates ----------------------------------------------------------------------------

    def is_duplicate(self, response: httpx.Response, detail: str | None) -> bool:
        return (
            response.status_code in (400, 409) and bool(detail) and bool(_DUPLICATE_CODE.search(detail or ""))
        )

    def on_duplicate(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        if call.attempt.in_doubt:
            # Our own codes already exist, though the lookup did not show them a moment ago
            # (or this API cannot look them up): ask again, never re-send.
            settled = self.reconcile(call)
            if settled is not None:
                return settled
            return needs_review(
                "duplicate",
                f"{self.label} says a qr_code of this booking already exists, but no lookup "
                "confirms the tickets. Settle at the provider.",
                http_status=response.status_code,
            )
        return failed(
            "duplicate",
            f"{self.label} refused a qr_code of this booking as already used "
            f"({call.said(detail)}), and no earlier attempt of ours could "
            "have created it.",
            http_status=response.status_code,
        )
