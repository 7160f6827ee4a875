"""The one interface every provider module implements, and the HTTP and error rules they share.

A provider module only translates: our stored payload + key -> an HTTP request, and the
provider's answer -> an Outcome. Retrying, leasing and recording are the ledger's and the
task's business, never the adapter's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx

from schemas.result import ResultError, Ticket

# Re-exported: the code derivation of rows already in flight now lives in codes.py.
from worker.backoff import parse_retry_after
from worker.providers.codes import derive_qr_code as derive_qr_code
from worker.providers.codes import with_derived_qr_codes as with_derived_qr_codes
from worker.redaction import MESSAGE_LIMIT as REDACTION_LIMIT
from worker.redaction import scrub
from worker.settings import AccountConfig


class OutcomeKind(StrEnum):
    ISSUED = "issued"  # tickets exist at the provider (created now, replayed or reconciled)
    RETRY = "retry"  # try again later with the same key
    FAILED = "failed"  # the provider refused: no ticket exists
    NEEDS_REVIEW = "needs_review"  # tickets may exist and nothing can confirm it


def _nowhere(reference: str) -> bool:
    """No ledger to ask (tests, the accounts check): no reference is known elsewhere."""
    del reference
    return False


@dataclass(frozen=True)
class Attempt:
    """Everything an adapter may use for one call."""

    idempotency_key: str
    payload: dict[str, Any]
    account: AccountConfig
    number: int  # 1 for the first provider call of this key, 2 for the next, ...
    # True when an earlier attempt may have reached the provider and created tickets (a
    # timeout after sending, a dropped connection, a 5xx, a worker killed mid-call).
    in_doubt: bool
    # When the first provider call of this key was made (the row's first claim); None when it
    # is this one. e-guma needs it: its idempotency keys expire 72 hours after first use.
    first_attempt_at: datetime | None = None
    # The ticket codes stored in the row before its first call (Fourvenues): entry i is the
    # qr_code sent for ticket i when the producer gave none (None where the producer did).
    # None for rows that were already in flight before codes were stored.
    qr_codes: Sequence[str | None] | None = None
    # True when an earlier call of this key got a 5xx answer (from the attempt history; only
    # looked up for a key in doubt). e-guma needs it: a provider that frees an Idempotency-Key
    # on a failed answer would book again on the retry.
    answered_5xx: bool = False
    # Is this provider reference (an order id) already another row's? Asked by a lookup that
    # found a candidate, so the same customer's other booking is not taken for this one.
    known_elsewhere: Callable[[str], bool] = _nowhere
    # The clock of this attempt (tests move it); None: the real clock.
    now: datetime | None = None

    def clock(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass
class Outcome:
    kind: OutcomeKind
    tickets: list[Ticket] = field(default_factory=list)
    provider_reference: str | None = None
    error: ResultError | None = None
    # For RETRY: the provider's Retry-After in seconds, a floor for the next delay.
    retry_after_s: float | None = None
    # For RETRY and FAILED: could this call have created tickets? Drives the next Attempt's
    # in_doubt. A connect error or a 429 could not; a read timeout, a dropped connection or
    # any 5xx (503 included: nothing documents that it means "not processed") could.
    may_have_created: bool = False
    # True when ISSUED was concluded from a replay, a duplicate answer or a lookup.
    reconciled: bool = False


class Provider(Protocol):
    name: str

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        """Make (or confirm) the tickets for this key. Must never raise for an HTTP or network
        problem: those become an Outcome. May raise only for programming errors."""
        ...


# --------------------------------------------------------------------------------------------
# Shared rules: scrubbing, outcome constructors, sending, and the default classification.
# --------------------------------------------------------------------------------------------

# scrub() lives in worker.redaction (secrets in every encoded form, credentials under any key
# name, emails, long digit runs, echoes of our own request); re-exported for the adapters.
MESSAGE_LIMIT = REDACTION_LIMIT


def account_secrets(account: AccountConfig) -> tuple[str, ...]:
    """Every secret of the account, for scrub(): a provider may echo a key back."""
    found = []
    for secret in (account.api_key, account.integration_id, account.secret):
        if secret is not None and secret.get_secret_value():
            found.append(secret.get_secret_value())
    return tuple(found)


def retry(
    type_: str,
    message: str,
    *,
    may_have_created: bool,
    http_status: int | None = None,
    retry_after_s: float | None = None,
) -> Outcome:
    return Outcome(
        kind=OutcomeKind.RETRY,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=True),
        retry_after_s=retry_after_s,
        may_have_created=may_have_created,
    )


def failed(type_: str, message: str, *, http_status: int | None = None) -> Outcome:
    return Outcome(
        kind=OutcomeKind.FAILED,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=False),
    )


def needs_review(
    type_: str,
    message: str,
    *,
    http_status: int | None = None,
    tickets: list[Ticket] | None = None,
    provider_reference: str | None = None,
) -> Outcome:
    """Tickets may exist and nothing confirms them. `tickets` holds those the provider did
    confirm (the operator's starting point), never codes that are only ours."""
    return Outcome(
        kind=OutcomeKind.NEEDS_REVIEW,
        tickets=list(tickets or []),
        provider_reference=provider_reference,
        error=ResultError(type=type_, message=message, http_status=http_status, retryable=False),
        may_have_created=True,
    )


def issued(
    tickets: list[Ticket],
    provider_reference: str | None = None,
    *,
    reconciled: bool = False,
) -> Outcome:
    return Outcome(
        kind=OutcomeKind.ISSUED,
        tickets=tickets,
        provider_reference=provider_reference,
        reconciled=reconciled,
    )


def keep_doubt(outcome: Outcome, in_doubt: bool) -> Outcome:
    """Apply an unresolved doubt from earlier attempts to this call's outcome.

    `may_have_created` on a RETRY then means "tickets may exist now", so the caller can copy it
    into the next Attempt's in_doubt. A FAILED answer does not prove that an earlier attempt
    created nothing, so it becomes NEEDS_REVIEW: ticketrelay never reports `failed` for a
    booking whose tickets may exist."""
    if not in_doubt:
        return outcome
    if outcome.kind is OutcomeKind.RETRY:
        outcome.may_have_created = True
    elif outcome.kind is OutcomeKind.FAILED and outcome.error is not None:
        err = outcome.error
        return needs_review(
            err.type,
            f"{err.message} An earlier attempt may already have created the tickets, so this "
            "is not reported as failed: check at the provider.",
            http_status=err.http_status,
            tickets=outcome.tickets,
            provider_reference=outcome.provider_reference,
        )
    return outcome


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def send(client: httpx.Client, request: httpx.Request, *, label: str) -> httpx.Response | Outcome:
    """Send one request; a transport problem becomes a RETRY Outcome, never an exception.

    Messages name the failure class only: an exception's text may quote the URL, and e-guma's
    URL holds the API key."""
    try:
        return client.send(request)
    except _NOT_SENT as exc:
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "network_error"
        return retry(
            kind,
            f"{label}: could not connect ({type(exc).__name__}); the request was not sent.",
            may_have_created=False,
        )
    except httpx.UnsupportedProtocol:
        return failed(
            "configuration_error",
            f"{label}: the account's base_url is not an http(s) URL. This is a configuration "
            "problem: nothing was sent.",
        )
    except httpx.TimeoutException as exc:
        return retry(
            "timeout",
            f"{label}: no answer within the time limit ({type(exc).__name__}); the request may "
            "have reached the provider.",
            may_have_created=True,
        )
    except httpx.TransportError as exc:
        return retry(
            "network_error",
            f"{label}: the connection failed before an answer arrived ({type(exc).__name__}); "
            "the request may have reached the provider.",
            may_have_created=True,
        )


def build_request(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Request | Outcome:
    """client.build_request, with a malformed URL turned into a configuration failure whose
    message does not repeat the URL."""
    try:
        return client.build_request(method, url, **kwargs)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        return failed(
            "configuration_error",
            "the account's base_url is not a valid URL. This is a configuration problem: nothing was sent.",
        )


def json_or_none(response: httpx.Response) -> Any:
    """The JSON body, or None when it is empty or not JSON."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def object_list(value: object) -> list[dict[str, Any]] | None:
    """A JSON array whose items are all objects (empty included), or None for anything else:
    the shape of every listing the adapters read, checked once so a provider's odd answer is
    "unreadable", never a crash further on."""
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return list(value)
    return None


def error_detail(response: httpx.Response, keys: Sequence[str] = ("message", "error")) -> str | None:
    """The provider's own error text, unscrubbed: JSON fields `keys` (first found; an `error`
    code and a `message` are combined), or a plain-text body. HTML pages are ignored."""
    body = json_or_none(response)
    if isinstance(body, dict):
        texts: list[str] = []
        for key in keys:
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value if isinstance(v, str | int | float))
            if isinstance(value, str) and value and value not in texts:
                texts.append(value)
        if "error" in body and "message" in body and len(texts) == 2:
            code, text = str(body["error"]), str(body["message"])
            return f"{code}: {text}" if code in texts and text in texts else "; ".join(texts)
        return "; ".join(texts) or None
    if body is not None:
        return None
    content_type = response.headers.get("content-type", "")
    if "html" in content_type:
        return None
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        return None
    return text[:2000] or None


def classify_response(
    response: httpx.Response,
    *,
    label: str,
    detail: str | None = None,
    secrets: Iterable[str] = (),
    echoes: Iterable[str] = (),
) -> Outcome:
    """The default table (DESIGN.md "Retry classification") for a non-2xx answer.

    `detail` is the provider's error text; it is scrubbed here."""
    status = response.status_code
    if 200 <= status < 300:
        raise ValueError("classify_response is for non-2xx answers")
    text = scrub(detail, secrets=secrets, echoes=echoes)
    said = f": {text}" if text else "."
    if status in (401, 403):
        what = "missing or invalid credentials" if status == 401 else "a permission is missing"
        return failed(
            "auth_error",
            f"{label} refused the account's credentials (HTTP {status}, {what}){said} This is a "
            "configuration problem: fix the account's API key or its permissions.",
            http_status=status,
        )
    if status == 429:
        wait = parse_retry_after(response.headers.get("retry-after"))
        hint = f" Retry-After {wait:g} s." if wait is not None else ""
        return retry(
            "rate_limited",
            f"{label} is rate limiting this account (HTTP 429){said}{hint}",
            http_status=status,
            retry_after_s=wait,
            may_have_created=False,
        )
    if status == 408:
        # Usually "the request never arrived whole", but a proxy in front of the provider may
        # answer 408 for a request the provider is still processing.
        return retry(
            "timeout",
            f"{label} timed out (HTTP 408){said} The request may have been processed.",
            http_status=status,
            may_have_created=True,
        )
    if status == 409:
        return retry(
            "in_progress",
            f"{label} is still processing an earlier request for this booking (HTTP 409){said}",
            http_status=status,
            may_have_created=True,
        )
    if status == 503:
        # No provider documents that a 503 means "not processed": a gateway may time out on a
        # request the provider goes on to commit.
        return retry(
            "provider_unavailable",
            f"{label} is unavailable (HTTP 503){said} The request may have been processed.",
            http_status=status,
            may_have_created=True,
        )
    if status >= 500:
        return retry(
            "provider_error",
            f"{label} failed with HTTP {status}{said} The request may have been processed.",
            http_status=status,
            may_have_created=True,
        )
    if 300 <= status < 400:
        return failed(
            "configuration_error",
            f"{label} answered with a redirect (HTTP {status}). This is a configuration "
            "problem: check the account's base_url.",
            http_status=status,
        )
    if status in (400, 422):
        return failed(
            "validation_error",
            f"{label} rejected the request (HTTP {status}){said}",
            http_status=status,
        )
    if status == 404:
        return failed(
            "not_found",
            f"{label} answered not found (HTTP 404){said}",
            http_status=status,
        )
    return failed(
        "provider_rejected",
        f"{label} refused the request (HTTP {status}){said}",
        http_status=status,
    )


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")
