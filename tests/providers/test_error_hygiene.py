"""No error message may carry a secret or a customer's personal data."""

from __future__ import annotations

import httpx
import pytest
from provider_helpers import account, make_attempt

from worker.devtools.sandbox import Sandbox
from worker.providers import PROVIDER_NAMES, get_provider
from worker.providers.base import Outcome

SECRET = "live-key-3141592653"
EMAIL = "jane.roe1@example.com"


def echoing(status: int, as_text: bool = False) -> httpx.MockTransport:
    """A provider that echoes the key, the customer's email and the full URL in its error."""

    def handler(request: httpx.Request) -> httpx.Response:
        text = f"bad request {request.url} for {EMAIL} with key {SECRET} phone 0034666666666"
        if as_text:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json={"success": False, "message": text, "error": text})

    return httpx.MockTransport(handler)


def _assert_clean(outcome: Outcome) -> None:
    assert outcome.error is not None
    message = outcome.error.message
    assert SECRET not in message
    assert EMAIL not in message and "@" not in message
    assert "666666" not in message
    assert "apikey" not in message and "http" not in message
    assert len(message) < 700


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 503])
@pytest.mark.parametrize("in_doubt", [False, True])
def test_messages_hold_no_secret_or_personal_data(provider: str, status: int, in_doubt: bool) -> None:
    acct = account(provider, api_key=SECRET)
    attempt = make_attempt(provider, acct=acct, in_doubt=in_doubt, number=2 if in_doubt else 1)
    with httpx.Client(transport=echoing(status, as_text=provider == "eguma")) as client:
        outcome = get_provider(provider).issue(client, attempt)
    _assert_clean(outcome)


def _break_next_to_personal_data(provider: str, payload: dict[str, object]) -> None:
    """Make a documented rule fail on a field that holds, or sits next to, personal data."""
    if provider == "remypass":
        payload["customer"] = f"Jane Roe {EMAIL} 0034666666666"  # must be an object
    elif provider == "fourvenues":
        ticket = payload["tickets"][0]  # type: ignore[index]
        del ticket["email"]  # required for every ticket
        ticket["full_name"] = EMAIL
    elif provider == "fourvenues_channels":
        payload["tickets"][0]["gender"] = f"x {EMAIL}"  # type: ignore[index]  # 0 or 1
    else:
        customer = payload["customer"]
        del customer["email"]  # type: ignore[attr-defined]  # required
        customer["last_name"] = EMAIL  # type: ignore[index]


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_sandbox_errors_hold_no_personal_data(provider: str) -> None:
    sandbox = Sandbox()
    attempt = make_attempt(provider)
    _break_next_to_personal_data(provider, attempt.payload)
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as client:
        outcome = get_provider(provider).issue(client, attempt)
    assert outcome.error is not None and outcome.error.type == "validation_error"
    _assert_clean(outcome)
