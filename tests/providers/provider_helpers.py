"""Helpers shared by the provider adapter tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from worker.devtools.sandbox.samples import sample_payload
from worker.providers.base import Attempt
from worker.settings import AccountConfig, sandbox_accounts

BASE = "http://sandbox.test"
ACCOUNTS = sandbox_accounts(BASE)

MakeAttempt = Callable[..., Attempt]


def account(provider: str, name: str = "default", **changes: Any) -> AccountConfig:
    """A sandbox account with some fields changed (secrets may be given as plain strings)."""
    for secret in ("api_key", "integration_id", "secret"):
        if isinstance(changes.get(secret), str):
            changes[secret] = SecretStr(changes[secret])
    return ACCOUNTS[(provider, name)].model_copy(update=changes)


def make_attempt(
    provider: str,
    *,
    n: int = 1,
    key: str | None = None,
    number: int = 1,
    in_doubt: bool = False,
    payload: dict[str, Any] | None = None,
    acct: AccountConfig | None = None,
    tickets: int = 1,
) -> Attempt:
    return Attempt(
        idempotency_key=key or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{provider}/{n}")),
        payload=payload if payload is not None else sample_payload(provider, n, tickets=tickets),
        account=acct or account(provider),
        number=number,
        in_doubt=in_doubt,
    )


def next_attempt(previous: Attempt, may_have_created: bool) -> Attempt:
    return Attempt(
        idempotency_key=previous.idempotency_key,
        payload=previous.payload,
        account=previous.account,
        number=previous.number + 1,
        in_doubt=previous.in_doubt or may_have_created,
    )


def raising(exc: type[httpx.TransportError]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    return httpx.MockTransport(handler)
