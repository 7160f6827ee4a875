"""Fourvenues channels-service: POST {base}/tickets
(providers/source/fourvenues-channels-tickets.txt).

No idempotency and no documented lookup. Every ticket carries a stable qr_code (codes.py).
After an attempt that may have created the tickets they are looked up with
`GET {base}/tickets?qr_code=CODE`; `GET /tickets` exists but its filter names are NOT
documented, so a list only proves what it contains: a ticket carrying our code proves that
ticket exists; an empty list, or a list of other tickets, does not prove the filter was
applied and so proves nothing (needs_review, never a re-send). Transient errors (5xx, 429,
network) retry. The rest is shared with the Integrations API (fourvenues_common.py).
"""

from __future__ import annotations

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
    keep_doubt,
    needs_review,
)
from worker.providers.fourvenues_common import Found, FourvenuesAdapter, LookupResult, Unsettled, text
from worker.providers.pipeline import Auth, Call, ProbeResult, probe_problem
from worker.settings import AccountConfig

PATH = "tickets"
LOOKUP_FILTER = "qr_code"  # undocumented: see the module docstring


def _ticket_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    body = json_or_none(response)
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and all(isinstance(t, dict) for t in data):
        return list(data)
    return None


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

    def lookup_code(self, call: Call, code: str) -> LookupResult:
        label = f"{self.label} lookup"
        unconfirmed = (
            f"{label}: an earlier attempt may have created the tickets and this account cannot "
            "prove they do not exist ({why}; the filters of GET /tickets are not documented). "
            "Not re-sent, to avoid duplicates: settle at the provider."
        )
        answer = self.request(
            call.client, call.account, "GET", PATH, label=label, params={LOOKUP_FILTER: code}
        )
        if isinstance(answer, Outcome):
            return Unsettled(keep_doubt(answer, True))
        status = answer.status_code
        if not answer.is_success:
            detail = error_detail(answer, self.error_keys)
            outcome = classify_response(answer, label=label, detail=detail, secrets=call.secrets)
            if outcome.kind is OutcomeKind.RETRY or status in (401, 403):
                return Unsettled(outcome)
            return Unsettled(
                needs_review("unconfirmed", unconfirmed.format(why=f"HTTP {status}"), http_status=status)
            )
        tickets = _ticket_list(answer)
        if tickets is None:
            return Unsettled(
                needs_review("unconfirmed", unconfirmed.format(why="unreadable answer"), http_status=status)
            )
        for ticket in tickets:
            if ticket.get("qr_code") == code:
                return Found(ticket)
        why = "the list is empty" if not tickets else "the list holds only other tickets"
        return Unsettled(needs_review("unconfirmed", unconfirmed.format(why=why), http_status=status))

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """GET /tickets with a random code: credentials accepted and a readable list."""
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
        if any(t.get("qr_code") != code for t in tickets):
            return ProbeResult(
                True,
                "credentials accepted; GET /tickets ignores the qr_code filter, so a booking "
                "whose answer is lost ends needs_review",
                warning=True,
            )
        return ProbeResult(
            True, "credentials accepted; GET /tickets answers a list (empty for a random code)"
        )


provider = FourvenuesChannels()
