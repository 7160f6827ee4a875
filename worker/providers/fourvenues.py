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
    retry,
)
from worker.providers.fourvenues_common import (
    Absent,
    Found,
    FourvenuesAdapter,
    LookupResult,
    Unsettled,
    text,
    ticket_objects,
)
from worker.providers.pipeline import Auth, Call, ProbeResult
from worker.settings import AccountConfig

API_PREFIX = "integrations"
CREATE_PATH = "tickets/"
# The reference page's path first, then the use-case page's.
LOOKUP_PATHS = ("tickets/by-code/{code}", "tickets/code/{code}")


def api_base(base_url: str) -> str:
    """`{host}/integrations`, whether base_url is the host or already ends in /integrations."""
    base = base_url.rstrip("/")
    if base.rsplit("/", 1)[-1] == API_PREFIX:
        return base
    return f"{base}/{API_PREFIX}"


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
        # Which lookup path answered for a base URL last time, so a host that serves only
        # code/ is not asked by-code first for every code.
        self._route: dict[str, int] = {}
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
