"""Fourvenues channels-service: POST {base}/tickets
(providers/source/fourvenues-channels-tickets.txt).

No idempotency and no documented lookup. Every ticket carries a stable qr_code (codes.py).
After an attempt that may have created the tickets they are looked up with
`GET {base}/tickets?qr_code=CODE`; `GET /tickets` exists but its filter names are NOT
documented, so a list proves only what it shows: a ticket carrying our code exists; a list of
other tickets means the filter is ignored and proves nothing (needs_review, never a re-send);
an empty list proves absence only once the filter is shown to work (the same listing without
the filter holds tickets), else needs_review. Transient errors (5xx, 429, network) retry.
The rest is shared with the Integrations API (fourvenues_common.py).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from schemas.payloads.fourvenues_channels import ChannelTicketsRequest
from schemas.result import Ticket
from worker.providers import codes
from worker.providers.base import (
    Outcome,
    OutcomeKind,
    classify_response,
    error_detail,
    json_or_none,
    needs_review,
    object_list,
)
from worker.providers.fourvenues_common import (
    Absent,
    Found,
    FourvenuesAdapter,
    LookupResult,
    Unsettled,
    text,
)
from worker.providers.pipeline import Auth, Call, ProbeResult, probe_problem
from worker.settings import AccountConfig

PATH = "tickets"
LOOKUP_FILTER = "qr_code"  # undocumented: see the module docstring


def _ticket_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    body = json_or_none(response)
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        data = [data]
    return object_list(data)


class FourvenuesChannels(FourvenuesAdapter):
    name = "fourvenues_channels"
    label = "Fourvenues channels"
    payload_model = ChannelTicketsRequest
    sandbox_route = "fourvenues-channels"
    error_keys = ("message", "error")

    def auth(self, account: AccountConfig) -> Auth:
        assert account.api_key is not None
        return Auth(headers={"X-Api-Key": account.api_key.get_secret_value()})

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        return "POST", PATH, {"json": call.body}

    def ticket_code(self, raw: dict[str, Any]) -> str | None:
        return text(raw.get("qr_code"))

    def normalise(self, raw: dict[str, Any]) -> Ticket:
        price = raw.get("price")
        return Ticket(
            ticket_id=text(raw.get("_id")),
            code=self.ticket_code(raw),
            category=text(price.get("name")) if isinstance(price, dict) else None,
            seat=None,
        )

    def __init__(self) -> None:
        # Base URLs whose GET /tickets was seen to honour the qr_code filter (see _filter_proven).
        self._filter_works: set[str] = set()
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._filter_works.clear()

    def _list(
        self,
        client: httpx.Client,
        account: AccountConfig,
        params: dict[str, str],
        secrets: tuple[str, ...],
    ) -> list[dict[str, Any]] | Unsettled:
        label = f"{self.label} lookup"
        answer = self.request(client, account, "GET", PATH, label=label, params=params)
        if isinstance(answer, Outcome):
            answer.may_have_created = True  # a lookup runs only where tickets may exist
            return Unsettled(answer)
        status = answer.status_code
        if not answer.is_success:
            detail = error_detail(answer, self.error_keys)
            outcome = classify_response(answer, label=label, detail=detail, secrets=secrets)
            if outcome.kind is OutcomeKind.RETRY or status in (401, 403):
                outcome.may_have_created = outcome.kind is OutcomeKind.RETRY
                return Unsettled(outcome)
            return self._unproven(f"GET /tickets answered HTTP {status}", status)
        tickets = _ticket_list(answer)
        if tickets is None:
            return self._unproven(f"GET /tickets answered HTTP {status} without a ticket list", status)
        return tickets

    def _unproven(self, why: str, status: int | None) -> Unsettled:
        return Unsettled(
            needs_review(
                "unconfirmed",
                f"{self.label} lookup: an earlier attempt may have created the tickets and this "
                f"account cannot prove they do not exist ({why}; the filters of GET /tickets are "
                "not documented). Not re-sent, to avoid duplicates: settle at the provider.",
                http_status=status,
            )
        )

    def _filter_proven(
        self, client: httpx.Client, account: AccountConfig, secrets: tuple[str, ...]
    ) -> bool | Unsettled:
        """Does GET /tickets apply the qr_code filter? Proven by a ticket the channel has: the
        listing filtered by its code holds it and only tickets with that code (a server that
        ignores the filter lists others; one that empties any filtered list shows none)."""
        if account.base_url in self._filter_works:
            return True
        unfiltered = self._list(client, account, {"limit": "1"}, secrets)
        if isinstance(unfiltered, Unsettled):
            return unfiltered
        known = next((text(t.get("qr_code")) for t in unfiltered if text(t.get("qr_code"))), None)
        if known is None:
            return False
        filtered = self._list(client, account, {LOOKUP_FILTER: known}, secrets)
        if isinstance(filtered, Unsettled):
            return filtered
        if not filtered or any(t.get("qr_code") != known for t in filtered):
            return False
        with self._lock:
            self._filter_works.add(account.base_url)
        return True

    def lookup_code(self, call: Call, code: str) -> LookupResult:
        listed = self._list(call.client, call.account, {LOOKUP_FILTER: code}, call.secrets)
        if isinstance(listed, Unsettled):
            return listed
        for ticket in listed:
            if ticket.get("qr_code") == code:
                return Found(ticket)
        if listed:
            return self._unproven("the qr_code filter is ignored: the list holds only other tickets", 200)
        proven = self._filter_proven(call.client, call.account, call.secrets)
        if isinstance(proven, Unsettled):
            return proven
        if proven:
            return Absent()
        return self._unproven(
            "the list is empty, and so is the unfiltered list: nothing shows the filter works", 200
        )

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """GET /tickets with a random code: credentials accepted and a readable list (empty)."""
        code = codes.new_qr_code()
        answer = self.request(client, account, "GET", PATH, label=self.label, params={LOOKUP_FILTER: code})
        problem = probe_problem(answer, self.label)
        if problem is not None:
            return problem
        assert isinstance(answer, httpx.Response)
        tickets = _ticket_list(answer) if answer.is_success else None
        if tickets is None:
            return ProbeResult(
                False,
                f"GET /tickets answered HTTP {answer.status_code} without a ticket list: check base_url",
            )
        if tickets:
            return ProbeResult(
                True,
                "credentials accepted; GET /tickets ignores the qr_code filter, so a booking "
                "whose answer is lost ends needs_review",
                warning=True,
            )
        proven = self._filter_proven(client, account, ())
        if proven is True:
            return ProbeResult(
                True, "credentials accepted; GET /tickets answers an empty list for a random code"
            )
        return ProbeResult(
            True,
            "credentials accepted; GET /tickets answers an empty list, but the channel has no "
            "ticket yet to show the qr_code filter works (until it does, a booking whose answer "
            "is lost ends needs_review)",
            warning=True,
        )


provider = FourvenuesChannels()


# --- cancellations (1.1) ---------------------------------------------------------------------
# `PUT /tickets/{id}/refund` {amount} voids a ticket on its first call (and records the refund).
# The amount is the cancel's `amount`, else the ticket's total_price as the booking sent it.
# After a void whose answer was lost, the ticket is looked for in `GET /tickets` (its filters
# are not documented, so the list is searched for the ticket's id): `voided` confirms it; a
# ticket not shown cannot be confirmed either way -> needs_review, never a second call.

from worker.providers.cancel_pipeline import (  # noqa: E402
    CancelCall,
    Canceller,
    CancelOutcome,
    Lookup,
    cancel_failed,
    cancel_review,
    from_outcome,
)
from worker.providers.fourvenues_common import json_amount  # noqa: E402


class ChannelsCanceller(Canceller):
    adapter: FourvenuesChannels

    def lookup(self, call: CancelCall, target: str) -> Lookup | CancelOutcome:
        code = next((t.code for t in call.attempt.tickets if t.ticket_id == target and t.code), None)
        params = {LOOKUP_FILTER: code} if code else {}
        listed = self.adapter._list(call.client, call.account, params, call.secrets)
        if isinstance(listed, Unsettled):
            return from_outcome(listed.outcome, lookup=True)
        for ticket in listed:
            if ticket.get("_id") == target:
                return Lookup(void=ticket.get("status") == "voided", found=ticket)
        return cancel_review(
            "unconfirmed",
            f"{self.label}: an earlier refund (void) of this ticket may have gone through and "
            "GET /tickets does not show the ticket (its filters are not documented), so it is "
            "not called again: check at Fourvenues.",
        )

    def _amount(self, call: CancelCall, target: str) -> float | None:
        wanted = json_amount(call.attempt.options.get("amount"))
        if wanted is not None:
            return wanted
        payload = call.attempt.booking_payload or {}
        sent = [t for t in payload.get("tickets") or [] if isinstance(t, dict)]
        index = next((i for i, t in enumerate(call.attempt.tickets) if t.ticket_id == target), None)
        if not sent or index is None:
            return None
        # Tickets beyond the objects sent reuse the last object's data.
        return json_amount(sent[min(index, len(sent) - 1)].get("total_price"))

    def void_request(
        self, call: CancelCall, target: str, found: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]] | CancelOutcome:
        amount = self._amount(call, target)
        if found is not None:  # the listing shows the real total and what was refunded
            total, refunded = json_amount(found.get("total_price")), json_amount(found.get("refunded")) or 0.0
            if call.attempt.options.get("amount") is None and total is not None:
                amount = total - refunded
        if amount is None or amount <= 0:
            return cancel_failed(
                "nothing_to_refund",
                f"{self.label} voids a ticket with its first refund, which needs an amount above "
                "0, and this ticket's price is not known or is 0: give `amount` in the cancel's "
                "payload, or void it at Fourvenues.",
            )
        return "PUT", f"{PATH}/{target}/refund", {"json": {"amount": amount}}


canceller = ChannelsCanceller(provider)
