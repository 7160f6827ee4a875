"""e-guma: POST {base}/ticketing/booking.json?apikey=KEY (providers/source/eguma-book-tickets.txt).

The `Idempotency-Key` header makes every attempt safe: the same key with the same body replays
the original answer. 409 = the first request with this key is still running (retry); 422 = the
key was used with a different body, which only a bug can cause: needs_review, never a new key.
The API key travels in the query string: no URL ever goes into a message.
"""

from __future__ import annotations

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
    issued,
    join_url,
    json_or_none,
    keep_doubt,
    needs_review,
    retry,
    scrub,
    send,
)

LABEL = "e-guma"
PATH = "ticketing/booking.json"
REPLAY_HEADERS = ("idempotent-replayed", "idempotency-replayed")


class Eguma:
    name = "eguma"

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        outcome = self._issue(client, attempt)
        # The same key replays a created booking, so only a refusal that comes before the
        # idempotency check (credentials) leaves an earlier attempt's doubt unresolved.
        if outcome.error is not None and outcome.error.type == "auth_error":
            return keep_doubt(outcome, attempt.in_doubt)
        return outcome

    def _issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        account = attempt.account
        problem = check_credentials(account, LABEL)
        if problem is not None:
            return problem
        assert account.api_key is not None
        request = build_request(
            client,
            "POST",
            join_url(account.base_url, PATH),
            params={"apikey": account.api_key.get_secret_value()},
            headers={
                "Idempotency-Key": attempt.idempotency_key,
                "Accept": "application/json",
            },
            json=attempt.payload,
        )
        if isinstance(request, Outcome):
            return request
        response = send(client, request, label=LABEL)
        if isinstance(response, Outcome):
            return response
        if response.is_success:
            return self._booked(response)
        secrets = account_secrets(account)
        detail = error_detail(response, ("error", "message"))
        if response.status_code == 422:
            return needs_review(
                "idempotency_mismatch",
                f"{LABEL} refused the Idempotency-Key because it was used with a different "
                f"request body (HTTP 422): {scrub(detail, secrets=secrets) or 'no details'}. "
                "The stored payload changed between attempts; an earlier attempt may have "
                "created the booking. Check at e-guma; never retry with a new key.",
                http_status=422,
            )
        return classify_response(response, label=LABEL, detail=detail, secrets=secrets)

    def _booked(self, response: httpx.Response) -> Outcome:
        body = json_or_none(response)
        booking_id = body.get("booking_id") if isinstance(body, dict) else None
        raw_tickets = body.get("tickets") if isinstance(body, dict) else None
        if not isinstance(booking_id, str | int) or not isinstance(raw_tickets, list):
            # The same key replays this answer: retrying is safe and may get a readable body.
            return retry(
                "malformed_response",
                f"{LABEL} answered HTTP {response.status_code} with a body that is not a "
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


provider = Eguma()
