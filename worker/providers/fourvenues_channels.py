"""Fourvenues channels-service: POST {base}/tickets
(providers/source/fourvenues-channels-tickets.txt).

No idempotency and no documented lookup. Every ticket carries a stable qr_code (the
producer's, or one derived from the idempotency key and the index). After an uncertain
attempt the tickets are looked up with `GET {base}/tickets?qr_code=CODE`: the filter name is
NOT documented (the sandbox supports it; a real account may not). Found -> ISSUED, reconciled;
an empty list -> safe to send again; the endpoint missing, the filter ignored (other tickets
listed) or refused -> needs_review; a transient error (5xx, 429, network) -> retry.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from schemas.result import Ticket
from worker.providers.base import (
    Attempt,
    Outcome,
    OutcomeKind,
    account_secrets,
    build_request,
    check_credentials,
    classify_response,
    error_detail,
    failed,
    issued,
    join_url,
    json_or_none,
    keep_doubt,
    needs_review,
    retry,
    scrub,
    send,
    with_derived_qr_codes,
)
from worker.settings import AccountConfig

LABEL = "Fourvenues channels"
_DUPLICATE_CODE = re.compile(r"already exists|duplicate", re.IGNORECASE)


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def normalise(raw: dict[str, Any]) -> Ticket:
    price = raw.get("price")
    return Ticket(
        ticket_id=_text(raw.get("_id")),
        code=_text(raw.get("qr_code")),
        category=_text(price.get("name")) if isinstance(price, dict) else None,
        seat=None,
    )


def _ticket_list(response: httpx.Response) -> list[dict[str, Any]] | None:
    body = json_or_none(response)
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and all(isinstance(t, dict) for t in data):
        return list(data)
    return None


class FourvenuesChannels:
    name = "fourvenues_channels"

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        account = attempt.account
        problem = check_credentials(account, LABEL)
        if problem is not None:
            return keep_doubt(problem, attempt.in_doubt)
        assert account.api_key is not None
        headers = {
            "X-Api-Key": account.api_key.get_secret_value(),
            "Accept": "application/json",
        }
        body = with_derived_qr_codes(attempt.payload, attempt.idempotency_key)
        codes = [str(t["qr_code"]) for t in body.get("tickets", []) if isinstance(t, dict)]
        if attempt.in_doubt:
            settled = self._reconcile(client, account, headers, codes)
            if settled is not None:
                return settled
        return self._create(client, attempt, headers, body, codes)

    def _reconcile(
        self,
        client: httpx.Client,
        account: AccountConfig,
        headers: dict[str, str],
        codes: list[str],
    ) -> Outcome | None:
        """None: every code is confirmed absent, so sending is safe."""
        found: list[dict[str, Any]] = []
        for code in codes:
            result = self._lookup(client, account, headers, code)
            if isinstance(result, Outcome):
                return result
            if result is not None:
                found.append(result)
        if not found:
            return None
        if len(found) < len(codes):
            return needs_review(
                "partial_issue",
                f"{LABEL}: {len(found)} of {len(codes)} tickets of this booking exist already; "
                "not re-sent, to avoid duplicates: settle at the provider.",
            )
        return issued([normalise(t) for t in found], None, reconciled=True)

    def _lookup(
        self,
        client: httpx.Client,
        account: AccountConfig,
        headers: dict[str, str],
        code: str,
    ) -> dict[str, Any] | Outcome | None:
        label = f"{LABEL} lookup"
        unconfirmed = (
            f"{label}: an earlier attempt may have created the tickets and they cannot be "
            "looked up by qr_code on this account ({why}). Not re-sent, to avoid duplicates: "
            "settle at the provider."
        )
        request = build_request(
            client,
            "GET",
            join_url(account.base_url, "tickets"),
            params={"qr_code": code},
            headers=headers,
        )
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=label)
        if isinstance(response, Outcome):
            return keep_doubt(response, True)
        status = response.status_code
        if not response.is_success:
            detail = error_detail(response, ("message", "error"))
            outcome = classify_response(
                response, label=label, detail=detail, secrets=account_secrets(account)
            )
            if outcome.kind is OutcomeKind.RETRY:
                return keep_doubt(outcome, True)
            if status in (401, 403):
                return keep_doubt(outcome, True)
            return needs_review(
                "unconfirmed",
                unconfirmed.format(why=f"HTTP {status}"),
                http_status=status,
            )
        tickets = _ticket_list(response)
        if tickets is None:
            return needs_review(
                "unconfirmed",
                unconfirmed.format(why="unreadable answer"),
                http_status=status,
            )
        if not tickets:
            return None
        for ticket in tickets:
            if ticket.get("qr_code") == code:
                return ticket
        # Tickets listed, none with this code: the filter was ignored; absence is unproven.
        return needs_review(
            "unconfirmed",
            unconfirmed.format(why="the qr_code filter is not applied"),
            http_status=status,
        )

    def _create(
        self,
        client: httpx.Client,
        attempt: Attempt,
        headers: dict[str, str],
        body: dict[str, Any],
        codes: list[str],
    ) -> Outcome:
        account = attempt.account
        request = build_request(
            client,
            "POST",
            join_url(account.base_url, "tickets"),
            headers=headers,
            json=body,
        )
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=LABEL)
        if isinstance(response, Outcome):
            return response
        secrets = account_secrets(account)
        detail = error_detail(response, ("message", "error"))
        if response.is_success:
            raw = _ticket_list(response)
            payload = json_or_none(response)
            if isinstance(payload, dict) and payload.get("success") is False:
                return failed(
                    "provider_rejected",
                    f"{LABEL} answered HTTP {response.status_code} with success=false: "
                    f"{scrub(detail, secrets=secrets) or 'no details'}",
                    http_status=response.status_code,
                )
            if not raw:
                return retry(
                    "malformed_response",
                    f"{LABEL} answered HTTP {response.status_code} with a body that holds no "
                    "ticket; the tickets may exist. The next attempt looks them up first.",
                    http_status=response.status_code,
                    may_have_created=True,
                )
            return issued([normalise(t) for t in raw], None)
        if response.status_code in (400, 409) and detail and _DUPLICATE_CODE.search(detail):
            if attempt.in_doubt:
                # Our codes are derived from our own key: "already exists" is our earlier
                # attempt. The codes are known, the ticket ids are not.
                return issued([Ticket(code=code) for code in codes], None, reconciled=True)
            return failed(
                "duplicate",
                f"{LABEL} refused a qr_code of this booking as already used "
                f"({scrub(detail, secrets=secrets)}), and no earlier attempt of ours could "
                "have created it.",
                http_status=response.status_code,
            )
        return classify_response(response, label=LABEL, detail=detail, secrets=secrets)


provider = FourvenuesChannels()
