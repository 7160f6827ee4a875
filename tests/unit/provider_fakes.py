"""Scripted provider answers for adapter tests: each test says exactly what the provider
answers, route by route (httpx.MockTransport), and reads back every request it made."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from worker.providers.base import Attempt
from worker.settings import AccountConfig

KEY = "live-key-123456"
HOSTS = {
    "remypass": "https://api.remypass.test/api/v1/public",
    "fourvenues": "https://api.fourvenues.test",
    "fourvenues_channels": "https://channels-service.fourvenues.test",
    "eguma": "https://api.e-guma.test/v1",
}

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response] | BaseException


def account(provider: str, **changes: Any) -> AccountConfig:
    fields: dict[str, Any] = {
        "provider": provider,
        "name": "default",
        "base_url": HOSTS[provider],
        "api_key": SecretStr(KEY),
    }
    fields.update(changes)
    for secret in ("api_key", "integration_id", "secret"):
        if isinstance(fields.get(secret), str):
            fields[secret] = SecretStr(fields[secret])
    return AccountConfig(**fields)


def html_404() -> httpx.Response:
    """What a web server says for a route it does not know."""
    return httpx.Response(404, headers={"content-type": "text/html"}, text="<html><h1>Not Found</h1></html>")


def fv_not_found() -> httpx.Response:
    """Fourvenues' own not-found answer: its JSON error envelope."""
    return httpx.Response(404, json={"success": False, "error": "Ticket not found"})


@dataclass
class FakeProvider:
    """Answers per (METHOD, path); a list is answered in turn, its last entry repeating.
    Unknown routes get an HTML 404, as a web server would."""

    routes: dict[tuple[str, str], Answer | list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: Answer) -> FakeProvider:
        self.routes[(method, path)] = list(answers)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if answers is None:
            return html_404()
        if isinstance(answers, list):
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        else:
            answer = answers
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def calls(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.url.path == path)
        ]


def attempt(
    provider: str,
    payload: dict[str, Any],
    *,
    number: int = 1,
    in_doubt: bool = False,
    key: str | None = None,
    acct: AccountConfig | None = None,
    first_attempt_at: datetime | None = None,
    qr_codes: list[str | None] | None = None,
    now: datetime | None = None,
    answered_5xx: bool = False,
) -> Attempt:
    return Attempt(
        idempotency_key=key or str(uuid.uuid4()),
        payload=payload,
        account=acct or account(provider),
        number=number,
        in_doubt=in_doubt,
        first_attempt_at=first_attempt_at,
        qr_codes=qr_codes,
        now=now,
        answered_5xx=answered_5xx,
    )


def fv_ticket(code: str, n: int = 1, **more: Any) -> dict[str, Any]:
    """A ticket as the Integrations API documents it (only the fields the adapter reads)."""
    return {"_id": f"tkt{n}", "code": code, "rate_name": "General Access", "payment_id": "pay1", **more}


def fv_payload(tickets: int = 1, quantity: int | None = None) -> dict[str, Any]:
    return {
        "quantity": tickets if quantity is None else quantity,
        "ticket_rate_id": "tkrt_1",
        "sale_type": "online",
        "channel_id": "chnl_1",
        "tickets": [
            {"price_id": "price_1", "total_price": 50, "full_name": "Jane Roe", "email": "jane@example.com"}
            for _ in range(tickets)
        ],
    }


def channels_payload(tickets: int = 1) -> dict[str, Any]:
    return {
        "quantity": tickets,
        "ticket_rate_id": "rate_1",
        "tickets": [{"price_id": "p1", "total_price": 10, "full_name": "Jane Roe"} for _ in range(tickets)],
    }


def remypass_payload() -> dict[str, Any]:
    return {
        "bookingId": "BOOKING-1",
        "film": "The Matrix",
        "startTime": "2026-12-25T19:30:00.000Z",
        "seat": "A12",
        "row": "A",
        "screen": "Screen 1",
        "customer": {"name": "Jane Roe", "email": "jane@example.com"},
    }


def eguma_payload() -> dict[str, Any]:
    return {
        "product_id": "prod1",
        "starts_at": "2026-03-19T10:00:00",
        "items": [{"category_id": "cat1", "quantity": 2}],
        "customer": {"first_name": "Jane", "last_name": "Roe", "email": "Jane@Example.com"},
    }
