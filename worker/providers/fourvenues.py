"""Fourvenues Integrations API: POST {base}/integrations/tickets/
(providers/source/fourvenues-integrations-tickets.txt).

No idempotency is documented. Every ticket carries a stable qr_code (the producer's, or one
derived from the idempotency key and the ticket index), and when an earlier attempt may have
created the tickets, `GET {base}/tickets/by-code/{code}` is asked first: all found -> ISSUED,
reconciled; none found -> send; some found -> needs_review; lookup unavailable -> retry.
This rests on the (undocumented) assumption that a sent qr_code becomes the ticket's `code`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from schemas.result import Ticket
from worker.providers.base import (
    Attempt,
    Outcome,
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

LABEL = "Fourvenues"
CREATE_PATH = "integrations/tickets/"
_DUPLICATE_CODE = re.compile(r"already exists|duplicate", re.IGNORECASE)


def auth_headers(account: AccountConfig) -> dict[str, str]:
    """Auth v2: `x-api-key`; auth v1: `integration_id` + `secret`."""
    if account.auth == "v1":
        assert account.integration_id is not None and account.secret is not None
        return {
            "integration_id": account.integration_id.get_secret_value(),
            "secret": account.secret.get_secret_value(),
        }
    assert account.api_key is not None
    return {"x-api-key": account.api_key.get_secret_value()}


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def normalise(raw: dict[str, Any]) -> Ticket:
    return Ticket(
        ticket_id=_text(raw.get("_id")),
        code=_text(raw.get("code")) or _text(raw.get("qr_code")),
        category=_text(raw.get("rate_name")),
        seat=None,
    )


def ticket_objects(data: object) -> list[dict[str, Any]] | None:
    """`data` is one ticket object in the docs; a list is accepted too."""
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(t, dict) for t in data) and data:
        return list(data)
    return None


def reference(raw: list[dict[str, Any]]) -> str | None:
    """The purchase's `payment_id` (shared by every ticket of one request), else the first
    ticket's `_id`."""
    first = raw[0]
    return _text(first.get("payment_id")) or _text(first.get("_id"))


class Fourvenues:
    name = "fourvenues"

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        account = attempt.account
        problem = check_credentials(account, LABEL)
        if problem is not None:
            return keep_doubt(problem, attempt.in_doubt)
        headers = {**auth_headers(account), "Accept": "application/json"}
        body = with_derived_qr_codes(attempt.payload, attempt.idempotency_key)
        codes = [str(t["qr_code"]) for t in body.get("tickets", []) if isinstance(t, dict)]
        if attempt.in_doubt:
            settled = self._reconcile(client, account, headers, codes)
            if settled is not None:
                return settled
        return self._create(client, attempt, headers, body, codes)

    # A lookup after an uncertain attempt: None means "none of the codes exists: safe to send".
    def _reconcile(
        self,
        client: httpx.Client,
        account: AccountConfig,
        headers: dict[str, str],
        codes: list[str],
    ) -> Outcome | None:
        found: list[dict[str, Any]] = []
        for code in codes:
            result = self._lookup(client, account, headers, code)
            if isinstance(result, Outcome):
                return keep_doubt(result, True)
            if result is not None:
                found.append(result)
        if not found:
            return None
        if len(found) < len(codes):
            return needs_review(
                "partial_issue",
                f"{LABEL}: {len(found)} of {len(codes)} tickets of this booking exist already; "
                "the rest were not created. Not re-sent, to avoid duplicates: settle at the "
                "provider.",
            )
        return issued([normalise(t) for t in found], reference(found), reconciled=True)

    def _lookup(
        self,
        client: httpx.Client,
        account: AccountConfig,
        headers: dict[str, str],
        code: str,
    ) -> dict[str, Any] | Outcome | None:
        label = f"{LABEL} lookup"
        url = join_url(account.base_url, f"tickets/by-code/{quote(code, safe='')}")
        request = build_request(client, "GET", url, headers=headers)
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=label)
        if isinstance(response, Outcome):
            return response
        if response.status_code == 404:
            return None
        if not response.is_success:
            detail = error_detail(response, ("error", "message"))
            return classify_response(response, label=label, detail=detail, secrets=account_secrets(account))
        body = json_or_none(response)
        tickets = ticket_objects(body.get("data") if isinstance(body, dict) else None)
        if tickets is None:
            return retry(
                "malformed_response",
                f"{label} answered HTTP {response.status_code} with an unreadable body.",
                http_status=response.status_code,
                may_have_created=True,
            )
        for ticket in tickets:
            if code in (ticket.get("code"), ticket.get("qr_code")):
                return ticket
        return None

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
            join_url(account.base_url, CREATE_PATH),
            headers=headers,
            json=body,
        )
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=LABEL)
        if isinstance(response, Outcome):
            return response
        secrets = account_secrets(account)
        detail = error_detail(response, ("error", "message"))
        if response.is_success:
            return self._created(response, codes, detail, secrets)
        if response.status_code in (400, 409) and detail and _DUPLICATE_CODE.search(detail):
            if attempt.in_doubt:
                # The lookup said "absent" a moment ago, the create says "exists": ask again.
                settled = self._reconcile(client, account, headers, codes)
                return settled or needs_review(
                    "duplicate",
                    f"{LABEL} says a qr_code of this booking already exists, but the lookup "
                    "cannot find it. Settle at the provider.",
                    http_status=response.status_code,
                )
            return failed(
                "duplicate",
                f"{LABEL} refused a qr_code of this booking as already used "
                f"({scrub(detail, secrets=secrets)}), and no earlier attempt of ours could "
                "have created it.",
                http_status=response.status_code,
            )
        return classify_response(response, label=LABEL, detail=detail, secrets=secrets)

    def _created(
        self,
        response: httpx.Response,
        codes: list[str],
        detail: str | None,
        secrets: tuple[str, ...],
    ) -> Outcome:
        body = json_or_none(response)
        if isinstance(body, dict) and body.get("success") is False:
            return failed(
                "provider_rejected",
                f"{LABEL} answered HTTP {response.status_code} with success=false: "
                f"{scrub(detail, secrets=secrets) or 'no details'}",
                http_status=response.status_code,
            )
        raw = ticket_objects(body.get("data") if isinstance(body, dict) else None)
        if raw is None:
            # A 2xx means the tickets may exist; the next attempt looks the codes up first.
            return retry(
                "malformed_response",
                f"{LABEL} answered HTTP {response.status_code} with a body that holds no "
                "ticket; the tickets may exist. The next attempt looks them up by code.",
                http_status=response.status_code,
                may_have_created=True,
            )
        tickets = [normalise(t) for t in raw]
        # The docs show one object even for quantity 2: the codes we sent stand for the rest.
        known = {t.code for t in tickets}
        for code in codes:
            if len(tickets) >= len(codes):
                break
            if code not in known:
                tickets.append(Ticket(code=code, category=tickets[0].category))
        return issued(tickets, reference(raw))


provider = Fourvenues()
