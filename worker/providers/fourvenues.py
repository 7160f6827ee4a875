"""Fourvenues Integrations API: POST {host}/integrations/tickets/
(providers/source/fourvenues-integrations-tickets.txt).

The account's base_url is the host (`https://api.fourvenues.com`); every path of this API is
under `/integrations/` below it (a base_url that already ends in `/integrations` works too).
After an attempt that may have created the tickets, each ticket's code is looked up with
`GET {host}/integrations/tickets/by-code/{code}` (one doc page writes `.../tickets/code/{code}`:
when by-code answers like an unknown route, code/ is tried). A code is absent ONLY when the
answer is Fourvenues' own not-found: a 404 with its JSON error envelope (`success: false` and
an `error` or `message`). A 404 HTML page, an empty 404, any other surprise: cannot confirm,
so retry and in the end needs_review, never a second create. The rest is shared with the
channels API (fourvenues_common.py).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from schemas.payloads.fourvenues import FourvenuesTicketsRequest
from schemas.result import Ticket
from worker.providers import codes
from worker.providers.base import (
    Outcome,
    OutcomeKind,
    classify_response,
    error_detail,
    join_url,
    json_or_none,
    needs_review,
    object_list,
    retry,
)
from worker.providers.fourvenues_common import (
    Absent,
    Found,
    FourvenuesAdapter,
    LookupResult,
    Unsettled,
    expected_count,
    text,
    ticket_objects,
)
from worker.providers.pipeline import Auth, Call, ProbeResult
from worker.settings import AccountConfig

API_PREFIX = "integrations"
LISTING_PAGE = 500  # the documented maximum of `limit`
LISTING_MAX_PAGES = 20
LISTING_WINDOW = timedelta(minutes=30)  # clock skew and request time around our attempts
# Around the answer's Date, beyond the time our request took: the header's whole seconds.
ANSWER_SLACK = timedelta(seconds=2)
CREATE_PATH = "tickets/"
# The reference page's path first, then the use-case page's.
LOOKUP_PATHS = ("tickets/by-code/{code}", "tickets/code/{code}")


def api_base(base_url: str) -> str:
    """`{host}/integrations`, whether base_url is the host or already ends in /integrations."""
    base = base_url.rstrip("/")
    if base.rsplit("/", 1)[-1] == API_PREFIX:
        return base
    return f"{base}/{API_PREFIX}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _person(ticket: dict[str, Any]) -> tuple[str, str]:
    """Who a ticket is for: (email, name), as sent (`full_name`) or listed (`name`)."""
    name = ticket.get("full_name") if ticket.get("full_name") is not None else ticket.get("name")
    return (str(ticket.get("email") or "").strip().casefold(), str(name or "").strip().casefold())


def _same_people(group: list[dict[str, Any]], ours: list[tuple[str, str]], expected: int) -> bool:
    """A listed purchase holds our booking's tickets: as many, for exactly the same people
    (tickets beyond the objects sent reuse their data, so only the set must match then)."""
    people = sorted(_person(t) for t in group)
    if len(group) != expected or set(people) != set(ours):
        return False
    return people == ours if expected == len(ours) else True


def is_not_found_envelope(response: httpx.Response) -> bool:
    """Fourvenues' own not-found: HTTP 404 with `{"success": false, "error"|"message": ...}`."""
    if response.status_code != 404:
        return False
    body = json_or_none(response)
    return (
        isinstance(body, dict)
        and body.get("success") is False
        and any(body.get(key) not in (None, "", [], {}) for key in ("error", "message"))
    )


class _UnknownRoute:
    """A lookup route that answered like no route at all (404 without the envelope, 405)."""


UNKNOWN_ROUTE = _UnknownRoute()


class Fourvenues(FourvenuesAdapter):
    name = "fourvenues"
    label = "Fourvenues"
    payload_model = FourvenuesTicketsRequest
    sandbox_route = "fourvenues"

    def __init__(self) -> None:
        # What this process has learned per API host (base_url), from the provider's answers:
        # which lookup path answers (a host that serves only code/ is not asked by-code first);
        # whether a sent qr_code becomes the ticket's code (the docs never say so: their example
        # sends QRCODE123ABC and answers code P6J21FF2S); the event of each ticket rate.
        self._route: dict[str, int] = {}
        self._keeps_codes: dict[str, bool] = {}
        self._rate_events: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def missing_credentials(self, account: AccountConfig) -> str | None:
        if account.auth == "v1":
            if account.integration_id is None or account.secret is None:
                return f"account {account.provider}.{account.name}: auth v1 needs integration_id and secret"
            return None
        return super().missing_credentials(account)

    def url(self, account: AccountConfig, path: str) -> str:
        return join_url(api_base(account.base_url), path)

    def auth(self, account: AccountConfig) -> Auth:
        """Auth v2: `x-api-key`; auth v1: `integration_id` + `secret`."""
        if account.auth == "v1":
            assert account.integration_id is not None and account.secret is not None
            return Auth(
                headers={
                    "integration_id": account.integration_id.get_secret_value(),
                    "secret": account.secret.get_secret_value(),
                }
            )
        assert account.api_key is not None
        return Auth(headers={"x-api-key": account.api_key.get_secret_value()})

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        return "POST", CREATE_PATH, {"json": call.body}

    def ticket_code(self, raw: dict[str, Any]) -> str | None:
        return text(raw.get("code")) or text(raw.get("qr_code"))

    def normalise(self, raw: dict[str, Any]) -> Ticket:
        return Ticket(
            ticket_id=text(raw.get("_id")),
            code=self.ticket_code(raw),
            category=text(raw.get("rate_name")),
            seat=None,
        )

    def reference(self, raw: list[dict[str, Any]]) -> str | None:
        """The purchase's `payment_id` (shared by the tickets of one request), else the first
        ticket's `_id`."""
        if not raw:
            return None
        return text(raw[0].get("payment_id")) or text(raw[0].get("_id"))

    # --- what the answers teach ----------------------------------------------------------------

    def forget(self) -> None:
        with self._lock:
            self._route.clear()
            self._keeps_codes.clear()
            self._rate_events.clear()

    def learn(self, call: Call, answered: list[dict[str, Any]]) -> None:
        base = call.account.base_url
        sent = set(call.codes)
        codes = {self.ticket_code(t) for t in answered} - {None}
        rate = call.body.get("ticket_rate_id")
        event = next((text(t.get("event_id")) for t in answered if text(t.get("event_id"))), None)
        with self._lock:
            if codes & sent:
                self._keeps_codes[base] = True
            elif codes and sent:
                # Every ticket of the answer carries a code we did not send.
                self._keeps_codes.setdefault(base, False)
            if isinstance(rate, str) and event is not None:
                self._rate_events[(base, rate)] = event

    def absence_is_proof(self, call: Call) -> bool | None:
        # An operator who has confirmed with Fourvenues how the account treats a sent qr_code
        # can say so in the accounts file (`qr_codes_kept = true|false`, read only if the
        # settings define it); otherwise what this process's answers have shown, if anything.
        configured = getattr(call.account, "qr_codes_kept", None)
        if isinstance(configured, bool):
            return configured
        return self._keeps_codes.get(call.account.base_url)

    # --- the event listing ----------------------------------------------------------------------

    def _event_tickets(
        self, call: Call, event_id: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]] | None:
        """Every ticket of the event created in [since, until] (`GET /tickets/?event_id=`,
        paged by 500); None when the listing cannot be read to its end."""
        found: list[dict[str, Any]] = []
        seen_ids: set[str] = set()
        for page in range(LISTING_MAX_PAGES):
            params = {
                "event_id": event_id,
                "start_date": _iso(since),
                "end_date": _iso(until),
                "date_field": "created_at",
                "limit": str(LISTING_PAGE),
                "offset": str(page * LISTING_PAGE),
            }
            answer = self.request(
                call.client, call.account, "GET", CREATE_PATH, label=f"{self.label} listing", params=params
            )
            if isinstance(answer, Outcome) or not answer.is_success:
                return None
            body = json_or_none(answer)
            data = object_list(body.get("data") if isinstance(body, dict) else body)
            if data is None:
                return None
            fresh = [t for t in data if text(t.get("_id")) not in seen_ids]
            if data and not fresh:
                return None  # the same page again: offset is ignored, the end cannot be reached
            for ticket in fresh:
                seen_ids.add(text(ticket.get("_id")) or "")
            found += fresh
            if len(data) < LISTING_PAGE:
                return found
        return None

    def confirm_purchase(
        self,
        call: Call,
        answered: list[dict[str, Any]],
        answered_at: datetime | None = None,
        took: timedelta = timedelta(0),
    ) -> list[dict[str, Any]]:
        """The answer shows fewer tickets than were made: the event's listing holds them all,
        and the tickets of one purchase share its payment_id.

        The listing is read only around the moment the provider made them: from the answer's
        Date (the provider's clock, so no skew; whole seconds) back by the time our request took.
        Read over an hour, a busy event's listing grew with every purchase and cost more than
        all the rest of a booking (measured in the benchmark: the sandbox and the worker spent
        most of their CPU paging through it). Without a Date the window is our clock's,
        widened for skew.
        """
        first = answered[0]
        event_id, payment_id = text(first.get("event_id")), text(first.get("payment_id"))
        if event_id is None or payment_id is None:
            return []
        if answered_at is not None:
            since, until = answered_at - ANSWER_SLACK - took, answered_at + ANSWER_SLACK
        else:
            now = call.attempt.clock()
            since, until = now - LISTING_WINDOW, now + LISTING_WINDOW
        listed = self._event_tickets(call, event_id, since, until)
        return [t for t in listed or [] if text(t.get("payment_id")) == payment_id]

    def find_purchase(self, call: Call) -> Outcome | None:
        """After a lost answer, when the codes we sent prove nothing: the purchase in the
        event's listing (the event of this rate, known from an earlier answer), created in the
        window of our attempts, whose tickets carry exactly our tickets' names and emails.
        Found once -> NEEDS_REVIEW naming the purchase: names and emails cannot tell this
        booking from the same customer's other purchase of that rate in the same window, so a
        match is evidence for an operator, never proof (reporting it as issued handed a
        returning customer's earlier tickets to this booking). Not found or ambiguous -> None
        (never proof of absence either)."""
        rate = call.body.get("ticket_rate_id")
        event_id = self._rate_events.get((call.account.base_url, rate)) if isinstance(rate, str) else None
        if event_id is None:
            return None
        now = call.attempt.clock()
        since = (call.attempt.first_attempt_at or now - timedelta(days=3)) - LISTING_WINDOW
        listed = self._event_tickets(call, event_id, since, now + LISTING_WINDOW)
        if not listed:
            return None
        ours = sorted(_person(t) for t in call.body.get("tickets") or [] if isinstance(t, dict))
        purchases: dict[str, list[dict[str, Any]]] = {}
        for ticket in listed:
            payment = text(ticket.get("payment_id"))
            if payment is not None:
                purchases.setdefault(payment, []).append(ticket)
        expected = expected_count(call.body)
        matches = [group for group in purchases.values() if _same_people(group, ours, expected)]
        if len(matches) != 1:
            return None
        [group] = matches
        return needs_review(
            "unconfirmed",
            f"{self.label}: an earlier attempt may have created this booking and the codes sent "
            "are not kept by this account, so they cannot be looked up; the event's listing holds "
            f"one purchase of these people in the window of our attempts (payment "
            f"{self.reference(group) or 'unknown'}), which may be this booking or another of the "
            "same customer. Not re-sent: settle at Fourvenues.",
        )

    # --- lookups -------------------------------------------------------------------------------

    def lookup_code(self, call: Call, code: str) -> LookupResult:
        return self._lookup(call.client, call.account, code, call.secrets)

    def _lookup(
        self, client: httpx.Client, account: AccountConfig, code: str, secrets: tuple[str, ...]
    ) -> LookupResult:
        label = f"{self.label} lookup"
        first = self._route.get(account.base_url, 0)
        order = [first, *(i for i in range(len(LOOKUP_PATHS)) if i != first)]
        statuses: list[int] = []
        for index in order:
            path = LOOKUP_PATHS[index].format(code=quote(code, safe=""))
            answer = self.request(client, account, "GET", path, label=label)
            if isinstance(answer, Outcome):
                return Unsettled(answer)
            verdict = self._read_lookup(answer, code, label, secrets)
            if verdict is UNKNOWN_ROUTE:
                statuses.append(answer.status_code)
                continue
            with self._lock:
                self._route[account.base_url] = index
            assert not isinstance(verdict, _UnknownRoute)
            return verdict
        return Unsettled(
            retry(
                "lookup_unavailable",
                f"{label}: neither lookup route answered as Fourvenues documents it (HTTP "
                f"{'/'.join(map(str, statuses))} without Fourvenues' JSON error), so whether an "
                "earlier attempt created the tickets cannot be confirmed. Nothing is re-sent; "
                "check the account's base_url.",
                http_status=statuses[-1] if statuses else None,
                may_have_created=True,
            )
        )

    def _read_lookup(
        self, response: httpx.Response, code: str, label: str, secrets: tuple[str, ...]
    ) -> LookupResult | _UnknownRoute:
        status = response.status_code
        if status == 404:
            return Absent() if is_not_found_envelope(response) else UNKNOWN_ROUTE
        if status == 405:
            return UNKNOWN_ROUTE
        if response.is_success:
            body = json_or_none(response)
            tickets = ticket_objects(body.get("data") if isinstance(body, dict) else None)
            if isinstance(body, dict) and body.get("success") is not False and tickets:
                for ticket in tickets:
                    if code in (text(ticket.get("code")), text(ticket.get("qr_code"))):
                        return Found(ticket)
            return Unsettled(
                retry(
                    "lookup_unconfirmed",
                    f"{label} answered HTTP {status} without a ticket carrying the code asked "
                    "for; whether an earlier attempt created the tickets cannot be confirmed.",
                    http_status=status,
                    may_have_created=True,
                )
            )
        detail = error_detail(response, self.error_keys)
        outcome = classify_response(response, label=label, detail=detail, secrets=secrets)
        if (
            outcome.kind is OutcomeKind.FAILED
            and outcome.error is not None
            and outcome.error.type != "auth_error"
        ):
            # A 400 or another refusal of the lookup proves nothing about the tickets.
            outcome = retry(
                "lookup_unconfirmed",
                f"{outcome.error.message} The tickets cannot be confirmed either way.",
                http_status=status,
                may_have_created=True,
            )
        return Unsettled(outcome)

    # --- accounts check ------------------------------------------------------------------------

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """Look a random code up: the documented not-found answer proves the credentials and
        the lookup route (and so the base_url) right."""
        code = codes.new_qr_code()
        result = self._lookup(client, account, code, ())
        if isinstance(result, Absent):
            route = LOOKUP_PATHS[self._route.get(account.base_url, 0)].split("{")[0]
            return ProbeResult(
                True, f"credentials accepted; {route}{{code}} answers not found for a random code"
            )
        if isinstance(result, Found):
            return ProbeResult(False, "a random code was found: the lookup route does not look codes up")
        error = result.outcome.error
        if error is not None and error.type == "lookup_unavailable":
            return ProbeResult(
                False,
                f"the lookup routes answered HTTP {error.http_status} without Fourvenues' JSON "
                "not-found, so lookups after a lost answer could never confirm anything: check "
                "base_url (the host; the API is under /integrations)",
            )
        return ProbeResult(False, error.message if error is not None else "no usable answer")


provider = Fourvenues()


# --- cancellations (1.1) ---------------------------------------------------------------------
# The Integrations API documents no void: `POST /integrations/tickets/refund/{id}` {amount} is
# the only call, so a cancel refunds each ticket (the cancel's `amount`, else what the ticket
# shows as paid) and says so in its result. Each ticket is read first
# (`GET /integrations/tickets/{id}`: `refunded`, `total_paid`, `status`): that gives the amount,
# and a ticket already refunded that much (an earlier refund whose answer was lost) is not
# refunded again.

from schemas.result import ResultError  # noqa: E402
from worker.providers.cancel_pipeline import (  # noqa: E402
    CancelAttempt,
    CancelCall,
    Canceller,
    CancelOutcome,
    Lookup,
    cancel_failed,
    cancel_review,
    from_outcome,
)
from worker.providers.fourvenues_common import json_amount  # noqa: E402


class FourvenuesCanceller(Canceller):
    def must_look_up(self, attempt: CancelAttempt) -> bool:
        return True  # the refund needs the ticket's amount, and the read proves a lost refund

    def _target_amount(self, call: CancelCall, ticket: dict[str, Any]) -> float | None:
        wanted = json_amount(call.attempt.options.get("amount"))
        return wanted if wanted is not None else json_amount(ticket.get("total_paid"))

    def lookup(self, call: CancelCall, target: str) -> Lookup | CancelOutcome:
        answer = self.adapter.request(
            call.client,
            call.account,
            "GET",
            f"tickets/{quote(target, safe='')}",
            label=f"{self.label} lookup",
        )
        if isinstance(answer, Outcome):
            return from_outcome(answer, lookup=True)
        body = json_or_none(answer)
        data = body.get("data") if isinstance(body, dict) else None
        if answer.is_success and isinstance(data, dict):
            refunded = json_amount(data.get("refunded")) or 0.0
            amount = self._target_amount(call, data)
            void = data.get("status") == "cancelled" or (
                amount is not None and amount > 0 and refunded + 1e-9 >= amount
            )
            return Lookup(void=void, found=data)
        if answer.is_success:
            return cancel_review(
                "unconfirmed",
                f"{self.label} lookup answered HTTP {answer.status_code} without a ticket: "
                "whether it was refunded cannot be confirmed, so it is not refunded: check at "
                "Fourvenues.",
                http_status=answer.status_code,
            )
        return self.lookup_refused(call, answer)

    def void_request(
        self, call: CancelCall, target: str, found: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]] | CancelOutcome:
        ticket = found or {}
        amount = self._target_amount(call, ticket)
        left = (amount or 0.0) - (json_amount(ticket.get("refunded")) or 0.0)
        if amount is None or left <= 0:
            return cancel_failed(
                "nothing_to_refund",
                f"{self.label} documents no void, only a refund, and this ticket shows nothing "
                "paid to refund: give `amount` in the cancel's payload, or cancel it at Fourvenues.",
            )
        return "POST", f"tickets/refund/{quote(target, safe='')}", {"json": {"amount": left}}

    def note(self, attempt: CancelAttempt) -> ResultError | None:
        amount = attempt.options.get("amount")
        what = f"{amount:g} each" if isinstance(amount, int | float) else "what each ticket shows as paid"
        return ResultError(
            type="refunded_not_voided",
            message=(
                f"{self.label} documents no void: each ticket was refunded ({what}) with POST "
                "/integrations/tickets/refund/{id}. Whether a refunded ticket still opens the door "
                "is not documented: check at Fourvenues if it must not."
            ),
            retryable=False,
        )


canceller = FourvenuesCanceller(provider)
