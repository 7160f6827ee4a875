"""e-guma: POST {base}/ticketing/booking.json?apikey=KEY (providers/source/eguma-book-tickets.txt).

The `Idempotency-Key` header makes a repeated attempt safe: the same key with the same body
replays the original answer. But e-guma keeps a key only 72 hours after its first request
completed; after that the same key would create a second booking. So a row whose first call
is older than KEY_SAFE_AGE (72 h less a margin for clocks and the first request's duration)
is reconciled through `GET /ticketing/orders.json` before any new send. So is any key in doubt
after a 5xx answer, whatever its age: whether e-guma stores a failed answer (and replays it) or
frees the key (and books again on the retry) is not documented. Within the 72 h a matching order
then is NEEDS_REVIEW (it may be ours, made before the error, or the customer's other one) and no
match sends again with the same key. Past the 72 h:

- exactly one order matches our booking (customer last name, exactly, as the filter is
  case-sensitive; email; created in the window of our attempts; product and start when the
  order lines carry them) -> ISSUED, reconciled;
- no order matches and no attempt of ours can have reached e-guma (not in doubt) -> sent,
  which is then a first booking, not a repeat;
- no order matches while in doubt -> NEEDS_REVIEW: the listing cannot prove absence (its
  paging, its time zone and the shape of its order lines are not documented);
- several matches, or a cancelled one -> NEEDS_REVIEW; an unreadable listing -> RETRY.

Any refusal of the key (409 in progress: retry; 422 or a 400 naming the key: the key was used
with another body) never ends `failed`. The API key travels in the query string: no URL ever
goes into a message.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from schemas.payloads.eguma import EgumaBooking
from schemas.result import Ticket
from worker.providers.base import (
    Attempt,
    Outcome,
    OutcomeKind,
    error_detail,
    failed,
    issued,
    json_or_none,
    needs_review,
    object_list,
    retry,
    scrub,
)
from worker.providers.pipeline import Adapter, Auth, Call, ProbeResult, probe_problem
from worker.settings import AccountConfig

PATH = "ticketing/booking.json"
ORDERS_PATH = "ticketing/orders.json"
REPLAY_HEADERS = ("idempotent-replayed", "idempotency-replayed")
KEY_TTL = timedelta(hours=72)
# Reconcile from 71 h: our first_attempt_at is taken before the first request even started,
# and a margin covers the clocks of two machines.
KEY_SAFE_AGE = KEY_TTL - timedelta(hours=1)
# orders.json writes times without a zone (`2019-06-04T23:15:14`): the filter window is widened
# by the largest UTC offset, so it covers the attempts whatever zone e-guma means.
ZONE_SLACK = timedelta(hours=14)
_KEY_REFUSAL = re.compile(r"idempot|\bkey\b", re.IGNORECASE)


def key_may_have_expired(attempt: Attempt) -> bool:
    """Could e-guma have forgotten this key? Only for a key an earlier attempt used."""
    if attempt.number <= 1 or attempt.first_attempt_at is None:
        return False
    first = attempt.first_attempt_at
    if first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return attempt.clock() - first >= KEY_SAFE_AGE


def _why_lookup(attempt: Attempt) -> str:
    if key_may_have_expired(attempt):
        return (
            f"the key of this booking may have expired (first used more than "
            f"{KEY_SAFE_AGE.total_seconds() / 3600:g} h ago)"
        )
    return "an earlier attempt was answered with a server error (5xx), which may have freed the key"


def _eguma_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # .NET style fractions have 7 digits; Python reads at most 6.
        cleaned = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        return datetime.fromisoformat(cleaned)
    except ValueError:
        return None


def _same_start(ours: str, theirs: object) -> bool:
    """starts_at as sent (a date for day slots, a date-time for time slots) against the order's."""
    if not isinstance(theirs, str):
        return False
    if len(ours) <= 10:
        return theirs[:10] == ours[:10]
    return theirs[:16] == ours[:16]


def _orders(body: object) -> list[dict[str, Any]] | None:
    if isinstance(body, dict):
        for key in ("orders", "data"):
            if isinstance(body.get(key), list):
                body = body[key]
                break
    return object_list(body)


class Eguma(Adapter):
    name = "eguma"
    label = "e-guma"
    payload_model = EgumaBooking
    sandbox_route = "eguma/v1"
    error_keys = ("error", "message")

    def auth(self, account: AccountConfig) -> Auth:
        assert account.api_key is not None
        return Auth(params={"apikey": account.api_key.get_secret_value()})

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        return "POST", PATH, {"headers": {"Idempotency-Key": call.attempt.idempotency_key}, "json": call.body}

    def must_reconcile(self, attempt: Attempt) -> bool:
        # Within 72 h the key's replay settles a lost answer; after that only the orders can.
        # A 5xx answer is different: the docs do not say whether a failed answer is stored and
        # replayed or frees the key, and a freed key books again on the retry. So after any 5xx
        # the orders are read first, whatever the key's age. With nothing in doubt no booking
        # of ours exists, so a send is the first booking: matching the orders then could only
        # take the same customer's other order for this one.
        return attempt.in_doubt and (key_may_have_expired(attempt) or attempt.answered_5xx)

    def parse_created(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        body = json_or_none(response)
        booking_id = body.get("booking_id") if isinstance(body, dict) else None
        raw_tickets = body.get("tickets") if isinstance(body, dict) else None
        if not isinstance(booking_id, str | int) or not isinstance(raw_tickets, list):
            # The same key replays this answer: retrying is safe and may get a readable body.
            return retry(
                "malformed_response",
                f"{self.label} answered HTTP {response.status_code} with a body that is not a "
                "booking; the booking may exist. Retrying with the same Idempotency-Key.",
                http_status=response.status_code,
                may_have_created=True,
            )
        tickets = [
            Ticket(
                ticket_id=None,
                code=str(t["ticket_number"]) if t.get("ticket_number") is not None else None,
                category=str(t["category_id"]) if t.get("category_id") is not None else None,
            )
            for t in raw_tickets
            if isinstance(t, dict)
        ]
        replayed = any(response.headers.get(h, "").strip().lower() == "true" for h in REPLAY_HEADERS)
        return issued(tickets, str(booking_id), reconciled=replayed)

    def classify(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        status = response.status_code
        held = reservation_refusal(call, response, detail)
        if held is not None:
            return held
        if status == 422 or (status == 400 and detail and _KEY_REFUSAL.search(detail)):
            return needs_review(
                "idempotency_mismatch",
                f"{self.label} refused the Idempotency-Key (HTTP {status}): "
                f"{call.said(detail) or 'no details'}. The key was used before, "
                "with another request body or by a request still running; an earlier attempt may "
                "have created the booking. Check at e-guma; never retry with a new key.",
                http_status=status,
            )
        return super().classify(call, response, detail)

    # --- reconcile past the key's lifetime -----------------------------------------------------

    def reconcile(self, call: Call) -> Outcome | None:
        attempt = call.attempt
        found = call.body.get("customer")
        customer: dict[str, Any] = found if isinstance(found, dict) else {}
        last_name = str(customer.get("last_name") or "")
        email = str(customer.get("email") or "").casefold()
        now = attempt.clock()
        first = attempt.first_attempt_at or now  # set for every attempt after the first
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        label = f"{self.label} orders lookup"
        answer = self.request(
            call.client,
            call.account,
            "GET",
            ORDERS_PATH,
            label=label,
            params={
                "updated_at_after": _eguma_time(first - ZONE_SLACK),
                "updated_at_before": _eguma_time(now + ZONE_SLACK),
                "last_name": last_name,
            },
        )
        if isinstance(answer, Outcome):
            answer.may_have_created = False  # a GET creates nothing; an earlier doubt is kept
            return answer
        if not answer.is_success:
            outcome = super().classify(call, answer, error_detail(answer, self.error_keys))
            if outcome.error is not None and outcome.error.type == "auth_error":
                return outcome
            if outcome.kind is OutcomeKind.RETRY and (answer.status_code >= 500 or answer.status_code == 429):
                # e-guma down or busy: its own kind of error, so the circuit breaker counts it
                # like any other outage and the booking waits without spending its attempts.
                outcome.may_have_created = False
                if outcome.error is not None:
                    outcome.error = outcome.error.model_copy(
                        update={"message": f"{label}: {outcome.error.message} Nothing is re-sent."}
                    )
                return outcome
            # Whatever else refused the listing, it proves nothing: try again later.
            return retry(
                "lookup_unconfirmed",
                f"{label}: {_why_lookup(attempt)}, and the orders listing answered HTTP "
                f"{answer.status_code}, so whether the booking exists cannot be confirmed. "
                "Nothing is re-sent.",
                http_status=answer.status_code,
                may_have_created=False,
            )
        orders = _orders(json_or_none(answer))
        if orders is None:
            return retry(
                "lookup_unconfirmed",
                f"{label} answered HTTP {answer.status_code} with a body that is not a list of "
                "orders; whether the booking exists cannot be confirmed. Nothing is re-sent.",
                http_status=answer.status_code,
                may_have_created=False,
            )
        matches = [
            o
            for o in orders
            if self._is_ours(o, call.body, last_name, email, first, now)
            # The same customer's other booking through us is not this one.
            and not (o.get("id") is not None and attempt.known_elsewhere(str(o["id"])))
        ]
        if not key_may_have_expired(attempt):
            return self._after_5xx(matches)
        if not matches:
            if not attempt.in_doubt:
                return None  # nothing of ours can have reached e-guma: a send is a first booking
            return needs_review(
                "unconfirmed",
                f"{self.label}: an earlier attempt may have created this booking and its "
                "Idempotency-Key may have expired (72 h), so it is not re-sent; the orders "
                "listing shows no matching order, which does not prove there is none (its "
                "paging and time zone are not documented). Check at e-guma.",
            )
        if len(matches) > 1:
            return needs_review(
                "ambiguous_order",
                f"{self.label}: {len(matches)} orders of this customer match this booking in the "
                "window of its attempts; which one is ours cannot be told. Not re-sent: settle "
                "at e-guma.",
            )
        order = matches[0]
        reference = str(order.get("id")) if order.get("id") is not None else None
        if order.get("status") == "cancelled":
            return needs_review(
                "cancelled_order",
                f"{self.label}: the order matching this booking (number "
                f"{scrub(order.get('order_number'))}) exists but is cancelled. Not re-sent: "
                "settle at e-guma.",
                provider_reference=reference,
            )
        return issued(self._tickets(order, call.body), reference, reconciled=True)

    def _after_5xx(self, matches: list[dict[str, Any]]) -> Outcome | None:
        """Within the key's 72 h, after a 5xx answer. No matching order: the key sent again
        either replays the stored answer or, if the failure freed it, books for the first time
        (the listing shows nothing of ours) -> None, send. A match: the 5xx may have come after
        e-guma committed, and if it freed the key a send would book a second time; but the
        match may also be the same customer's other order of this slot (names, email and slot
        are all the listing offers) -> NEEDS_REVIEW naming it, never a send and never its
        tickets handed to this booking."""
        if not matches:
            return None
        numbers = ", ".join(str(scrub(o.get("order_number")) or "unknown") for o in matches[:3])
        only = matches[0].get("id") if len(matches) == 1 else None
        return needs_review(
            "failed_after_commit",
            f"{self.label} answered an earlier attempt with a server error (5xx), and its orders "
            f"listing now holds {len(matches)} order(s) of this customer for this slot in the "
            f"window of our attempts (order number {numbers}): the error may have come after the "
            "booking was made, or the order may be another of the same customer. Not re-sent "
            "(a freed Idempotency-Key would book again): settle at e-guma.",
            provider_reference=str(only) if only is not None else None,
        )

    def _is_ours(
        self,
        order: dict[str, Any],
        body: dict[str, Any],
        last_name: str,
        email: str,
        first: datetime,
        now: datetime,
    ) -> bool:
        customer = order.get("customer")
        if not isinstance(customer, dict):
            return False
        if customer.get("last_name") != last_name:
            return False  # the filter is case-sensitive; an unfiltered listing is checked here
        if str(customer.get("email") or "").casefold() != email:
            return False
        created = _parse_time(order.get("created_at"))
        if created is None:
            return False
        if created.tzinfo is None:
            lo, hi = first - ZONE_SLACK, now + ZONE_SLACK
            created = created.replace(tzinfo=UTC)
        else:
            lo, hi = first - timedelta(minutes=5), now + timedelta(minutes=5)
        if not lo <= created <= hi:
            return False
        lines = [line for line in order.get("order_lines") or [] if isinstance(line, dict)]
        products = {str(line["product_id"]) for line in lines if line.get("product_id") is not None}
        if products and str(body.get("product_id")) not in products:
            return False
        starts = [line["starts_at"] for line in lines if line.get("starts_at") is not None]
        return not (starts and not any(_same_start(str(body.get("starts_at")), s) for s in starts))

    @staticmethod
    def _tickets(order: dict[str, Any], body: dict[str, Any]) -> list[Ticket]:
        """The order's ticket numbers where its lines carry them; otherwise one ticket per
        booked item with only the category known (orders.json documents no ticket numbers)."""
        lines = [line for line in order.get("order_lines") or [] if isinstance(line, dict)]
        numbered = [
            Ticket(code=str(line["ticket_number"]), category=str(line.get("category_id") or "") or None)
            for line in lines
            if line.get("ticket_number") is not None
        ]
        if numbered:
            return numbered
        tickets: list[Ticket] = []
        for item in body.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("quantity"), int):
                tickets += [Ticket(category=str(item.get("category_id")))] * item["quantity"]
        return tickets

    # --- accounts check ------------------------------------------------------------------------

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """GET /ticketing/orders.json for an order number that cannot exist: an empty list."""
        answer = self.request(
            client,
            account,
            "GET",
            ORDERS_PATH,
            label=self.label,
            params={"order_number": f"TR-CHECK-{secrets.token_hex(8)}"},
        )
        problem = probe_problem(answer, self.label)
        if problem is not None:
            return problem
        assert isinstance(answer, httpx.Response)
        orders = _orders(json_or_none(answer)) if answer.is_success else None
        if orders is None:
            return ProbeResult(
                False,
                f"GET /ticketing/orders.json answered HTTP {answer.status_code} without a list "
                "of orders: check base_url",
            )
        if orders:
            return ProbeResult(
                True,
                "API key accepted; orders.json ignored the order_number filter (reconciling "
                "after 72 h then relies on matching the customer)",
                warning=True,
            )
        return ProbeResult(True, "API key accepted; orders.json answers an empty list for an unknown order")


provider = Eguma()


# --- reservations (issue 13, point 5) ----------------------------------------------------
# A payload's `reservation_id` (a 60-minute hold from POST /ticketing/reservation.json) is sent
# as is. Booking with a hold that expired, was used or was cancelled is refused; the status is
# not documented (400, 404, 409, 410 or 422 are all plausible), so the refusal is known by its
# words. Whatever the status, it is permanent: the hold will not come back.

_RESERVATION_REFUSAL = re.compile(r"reservation", re.IGNORECASE)


def reservation_refusal(call: Call, response: httpx.Response, detail: str | None) -> Outcome | None:
    """A refusal of the payload's reservation_id, as a clear `failed`; None for any other."""
    status = response.status_code
    if not call.body.get("reservation_id") or not 400 <= status < 500 or status in (401, 403, 429):
        return None
    if not detail or not _RESERVATION_REFUSAL.search(detail):
        return None
    reason = scrub(detail, secrets=call.secrets)
    return failed(
        "reservation_refused",
        f"{Eguma.label} refused the booking's reservation (HTTP {status}): {reason}. A hold lasts "
        "60 minutes and serves one booking; reserve again and send a new message.",
        http_status=status,
    )


# --- cancellations (1.1) -------------------------------------------------------------------
# POST /ticketing/cancel-booking.json {booking_id} cancels every ticket of the booking. Only
# the API key that created it may (any other: 404 not_found); refused once the slot started,
# once a ticket was checked in, or when already cancelled. No Idempotency-Key: the endpoint
# does not document one. After a cancel whose answer was lost the order is read first
# (GET /ticketing/orders.json: status `cancelled`); a cancel repeated anyway is harmless, and
# its "already cancelled" refusal confirms the earlier one.

from worker.providers.cancel_pipeline import (  # noqa: E402
    CancelAttempt,
    CancelCall,
    Canceller,
    CancelOutcome,
    Lookup,
    cancel_failed,
    cancel_review,
)

CANCEL_PATH = "ticketing/cancel-booking.json"
_ALREADY_CANCELLED = re.compile(r"already[\s_-]+cancel", re.IGNORECASE)


class EgumaCanceller(Canceller):
    def targets(self, attempt: CancelAttempt) -> list[str] | CancelOutcome:
        if not attempt.booking_reference:
            return cancel_review(
                "unknown_booking_id",
                f"{self.label}: the booking's booking_id is not known, so it cannot be cancelled "
                "here: cancel it at e-guma.",
            )
        return [attempt.booking_reference]

    def lookup(self, call: CancelCall, target: str) -> Lookup | CancelOutcome:
        payload = call.attempt.booking_payload or {}
        found = payload.get("customer")
        customer: dict[str, Any] = found if isinstance(found, dict) else {}
        params = {"last_name": str(customer.get("last_name") or "")}
        created = call.attempt.booking_created_at
        if created is not None:
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            params["updated_at_after"] = _eguma_time(created - ZONE_SLACK)
        answer = self.adapter.request(
            call.client, call.account, "GET", ORDERS_PATH, label=f"{self.label} orders lookup", params=params
        )
        # Unconfirmed is no reason to stop here: cancelling again is harmless (see above).
        if isinstance(answer, Outcome) or not answer.is_success:
            return Lookup(void=False)
        for order in _orders(json_or_none(answer)) or []:
            if str(order.get("id")) == target:
                return Lookup(void=order.get("status") == "cancelled", found=order)
        return Lookup(void=False)

    def void_request(
        self, call: CancelCall, target: str, found: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]] | CancelOutcome:
        return "POST", CANCEL_PATH, {"json": {"booking_id": target}}

    def is_already_void(self, response: httpx.Response, detail: str | None) -> bool:
        return 400 <= response.status_code < 500 and bool(detail and _ALREADY_CANCELLED.search(detail))

    def refusal(self, call: CancelCall, response: httpx.Response, detail: str | None) -> CancelOutcome:
        status = response.status_code
        reason = scrub(detail, secrets=call.secrets) or "no details"
        if status == 404:
            return cancel_failed(
                "not_found",
                f"{self.label} does not know this booking for this API key (HTTP 404: {reason}); "
                "only the key that created a booking may cancel it.",
                http_status=status,
            )
        if status in (400, 409, 422):
            # Not in progress, not a key problem: e-guma's refusals of a cancel (started,
            # checked in) are final, whatever status they come with.
            return cancel_failed(
                "cancel_refused",
                f"{self.label} refused to cancel the booking (HTTP {status}): {reason}",
                http_status=status,
            )
        return super().refusal(call, response, detail)


canceller = EgumaCanceller(provider)
