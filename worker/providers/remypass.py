"""RemyPass: POST {base}/event-tickets/create-from-booking (providers/source/remypass-*.txt).

No idempotency header: `bookingId` is unique per account and RemyPass rejects a repeated one.
A "duplicate" answer is ours only when an earlier attempt of ours may have reached RemyPass
(the attempt is in doubt: a timeout, a dropped connection, a 5xx): then the pass exists and the
booking is ISSUED, reconciled. Otherwise (a first attempt, or earlier attempts that could not
have arrived: a 429, a connect error) the bookingId belongs to another booking: FAILED.
No lookup by bookingId exists, so a reconciled result holds one ticket with only the seat
known (ticket_id and code null); an operator finds the pass in `GET /passes`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx

from schemas.payloads.remypass import RemyPassBooking
from schemas.result import Ticket
from worker.providers.base import Outcome, failed, issued, json_or_none, needs_review
from worker.providers.pipeline import Adapter, Auth, Call, ProbeResult, probe_problem
from worker.settings import AccountConfig

PATH = "event-tickets/create-from-booking"
# The page says only "duplicate booking IDs are rejected" / "a bookingId that already exists";
# the answer's wording is not documented, so match the usual phrasings of a uniqueness refusal.
_DUPLICATE = re.compile(
    r"duplicat|already\s+(?:exist|used|in\s+use|taken|registered|been|issued|booked)|"
    r"must\s+be\s+unique|not\s+unique|unique\s+(?:constraint|violation|key)|bookingid\s+exists",
    re.IGNORECASE,
)


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


def _pass_instance(body: object) -> dict[str, Any] | None:
    """`data.passInstance` of an answer, when it is a pass with an id."""
    data = body.get("data") if isinstance(body, dict) else None
    instance = data.get("passInstance") if isinstance(data, dict) else None
    if isinstance(instance, dict) and _str(instance.get("_id")):
        return instance
    return None


class RemyPass(Adapter):
    name = "remypass"
    label = "RemyPass"
    payload_model = RemyPassBooking
    sandbox_route = "remypass/api/v1/public"

    def new_generation_refusal(self, payload: dict[str, Any] | None) -> str | None:
        return super().new_generation_refusal(payload) or (
            "remypass: bookingId is unique per account at RemyPass; a new generation would be "
            "answered 'duplicate' (and reconciled as the old ticket), never a new ticket"
        )

    def auth(self, account: AccountConfig) -> Auth:
        assert account.api_key is not None  # missing_credentials ran first
        return Auth(headers={"X-API-Key": account.api_key.get_secret_value()})

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        return "POST", PATH, {"json": call.body}

    def parse_created(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        instance = _pass_instance(json_or_none(response))
        if instance is None:
            # Not idempotent by key and no lookup: a retry would only say "duplicate".
            return needs_review(
                "malformed_response",
                f"{self.label} answered HTTP {response.status_code} (created) but the body holds "
                "no passInstance: the pass most likely exists, its id is unknown. Find it in "
                "RemyPass by bookingId.",
                http_status=response.status_code,
            )
        pass_id = str(instance["_id"])
        ticket = Ticket(
            ticket_id=pass_id,
            code=_str(instance.get("serialNumber")) or pass_id,
            category=None,
            seat=seat_label(call.body),
        )
        return issued([ticket], pass_id)

    def is_duplicate(self, response: httpx.Response, detail: str | None) -> bool:
        return response.status_code in (400, 409) and bool(detail) and bool(_DUPLICATE.search(detail or ""))

    def on_duplicate(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        if call.attempt.in_doubt:
            # An earlier attempt of ours may have reached RemyPass: it created this pass. The
            # docs do not say whether the refusal carries the pass; when it does, keep its ids.
            instance = _pass_instance(json_or_none(response))
            pass_id = _str(instance.get("_id")) if instance else None
            code = (_str(instance.get("serialNumber")) or pass_id) if instance else None
            ticket = Ticket(ticket_id=pass_id, code=code, category=None, seat=seat_label(call.body))
            return issued([ticket], pass_id, reconciled=True)
        return failed(
            "duplicate",
            f"{self.label}: this bookingId is already used by another booking "
            f"({call.said(detail)}); no earlier attempt of ours can have "
            "reached RemyPass, so it is not this booking's pass.",
            http_status=response.status_code,
        )

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """GET /passes/{random id}: the documented 404 for an unknown pass."""
        random_id = secrets.token_hex(12)  # 24 hex characters, the shape of RemyPass ids
        answer = self.request(client, account, "GET", f"passes/{random_id}", label=self.label)
        if isinstance(answer, httpx.Response) and answer.status_code == 403:
            return ProbeResult(
                False,
                "RemyPass refused the key (HTTP 403): the key lacks passes:read (the check needs "
                "it) or the company's plan lacks Public API access",
            )
        problem = probe_problem(answer, self.label)
        if problem is not None:
            return problem
        assert isinstance(answer, httpx.Response)
        body = json_or_none(answer)
        if answer.status_code == 404 and isinstance(body, dict):
            return ProbeResult(True, "key accepted; GET /passes/{id} answers not found for an unknown id")
        return ProbeResult(
            False,
            f"GET /passes/{{id}} answered HTTP {answer.status_code} "
            f"{'with JSON' if body is not None else 'without a JSON body'} for an unknown id, "
            "not RemyPass's not-found answer: check base_url",
        )


provider = RemyPass()


# --- cancellations (1.1) ---------------------------------------------------------------------
# POST /passes/{id}/revoke voids a pass for good. After a void whose answer was lost the pass
# is read first (GET /passes/{id}: status `void`), so a pass is revoked once.

from worker.providers.cancel_pipeline import (  # noqa: E402
    CancelCall,
    Canceller,
    CancelOutcome,
    Lookup,
    cancel_review,
    from_outcome,
)


class RemyPassCanceller(Canceller):
    def lookup(self, call: CancelCall, target: str) -> Lookup | CancelOutcome:
        answer = self.adapter.request(
            call.client, call.account, "GET", f"passes/{target}", label=f"{self.label} lookup"
        )
        if isinstance(answer, Outcome):
            return from_outcome(answer, lookup=True)
        body = json_or_none(answer)
        data = body.get("data") if isinstance(body, dict) else None
        if answer.is_success and isinstance(data, dict) and _str(data.get("status")):
            return Lookup(void=data.get("status") == "void", found=data)
        if answer.status_code == 404 and isinstance(body, dict):
            return cancel_review(
                "pass_not_found",
                f"{self.label}: the booking's pass is not found (HTTP 404) while an earlier "
                "revoke may have gone through: check at RemyPass.",
                http_status=404,
            )
        if answer.is_success:
            return cancel_review(
                "unconfirmed",
                f"{self.label} lookup answered HTTP {answer.status_code} without a pass status; "
                "whether the earlier revoke went through cannot be confirmed: check at RemyPass.",
                http_status=answer.status_code,
            )
        return self.lookup_refused(call, answer)

    def void_request(
        self, call: CancelCall, target: str, found: dict[str, Any] | None
    ) -> tuple[str, str, dict[str, Any]] | CancelOutcome:
        return "POST", f"passes/{target}/revoke", {}


canceller = RemyPassCanceller(provider)
