"""RemyPass: POST {base}/event-tickets/create-from-booking (providers/source/remypass-*.txt).

Idempotency rests on `bookingId`: RemyPass rejects a repeated one. A "duplicate" answer for a
booking whose earlier attempt may have reached RemyPass means the pass exists: ISSUED,
reconciled. No lookup by bookingId exists, so a reconciled result holds one ticket with only
the seat known (ticket_id and code null); an operator can find the pass in `GET /passes`.
"""

from __future__ import annotations

import re
from typing import Any

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
    scrub,
    send,
)

LABEL = "RemyPass"
PATH = "event-tickets/create-from-booking"
_DUPLICATE = re.compile(r"duplicate|already exists", re.IGNORECASE)


def seat_label(payload: dict[str, Any]) -> str | None:
    """The normalised seat: RemyPass's own example sends row "A" and seat "A12", so a seat that
    already starts with its row is kept as is; otherwise "row-seat" ("10-5")."""
    seat, row = payload.get("seat"), payload.get("row")
    if not isinstance(seat, str) or not seat:
        return None
    if not isinstance(row, str) or not row or seat.startswith(row):
        return seat
    return f"{row}-{seat}"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class RemyPass:
    name = "remypass"

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        return keep_doubt(self._issue(client, attempt), attempt.in_doubt)

    def _issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        account = attempt.account
        problem = check_credentials(account, LABEL)
        if problem is not None:
            return problem
        assert account.api_key is not None  # checked above
        request = build_request(
            client,
            "POST",
            join_url(account.base_url, PATH),
            headers={
                "X-API-Key": account.api_key.get_secret_value(),
                "Accept": "application/json",
            },
            json=attempt.payload,
        )
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=LABEL)
        if isinstance(response, Outcome):
            return response
        secrets = account_secrets(account)
        if response.is_success:
            return self._created(response, attempt.payload)
        detail = error_detail(response, ("message", "error"))
        if response.status_code in (400, 409) and detail and _DUPLICATE.search(detail):
            return self._duplicate(response, attempt, scrub(detail, secrets=secrets))
        return classify_response(response, label=LABEL, detail=detail, secrets=secrets)

    def _created(self, response: httpx.Response, payload: dict[str, Any]) -> Outcome:
        body = json_or_none(response)
        data = body.get("data") if isinstance(body, dict) else None
        instance = data.get("passInstance") if isinstance(data, dict) else None
        if not isinstance(instance, dict) or not _str(instance.get("_id")):
            # Not idempotent by key and no lookup: a retry would only say "duplicate".
            return needs_review(
                "malformed_response",
                f"{LABEL} answered HTTP {response.status_code} (created) but the body holds no "
                "passInstance: the pass most likely exists, its id is unknown. Find it in "
                "RemyPass by bookingId.",
                http_status=response.status_code,
            )
        pass_id = str(instance["_id"])
        ticket = Ticket(
            ticket_id=pass_id,
            code=_str(instance.get("serialNumber")) or pass_id,
            category=None,
            seat=seat_label(payload),
        )
        return issued([ticket], pass_id)

    def _duplicate(self, response: httpx.Response, attempt: Attempt, detail: str) -> Outcome:
        if attempt.in_doubt or attempt.number > 1:
            # Our own earlier attempt created it: the pass exists, details unknown.
            ticket = Ticket(
                ticket_id=None,
                code=None,
                category=None,
                seat=seat_label(attempt.payload),
            )
            return issued([ticket], None, reconciled=True)
        return failed(
            "duplicate",
            f"{LABEL} already has a booking with this bookingId ({detail}) and no earlier "
            "attempt of ours could have created it: the bookingId was used by another booking.",
            http_status=response.status_code,
        )


provider = RemyPass()
