"""The one issuing pipeline every provider runs, and the hooks an adapter fills in.

    check credentials -> (in doubt, or the provider needs it) reconcile first -> create ->
    parse the success or classify the error -> keep the doubt

`Adapter.issue` is that pipeline and no adapter overrides it. An adapter says how to
authenticate, what to send, how to read a created answer, what its duplicate answer looks like,
how to look up what an earlier attempt may have created, and how to probe an account
(`ticketrelay accounts check`). Retrying, leasing and recording stay with the ledger and the
task (worker/issuing.py). See docs/adding-a-provider.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from worker.providers.base import (
    Attempt,
    Outcome,
    account_secrets,
    build_request,
    classify_response,
    error_detail,
    failed,
    join_url,
    keep_doubt,
    scrub,
    send,
)
from worker.redaction import payload_echoes
from worker.settings import AccountConfig


@dataclass(frozen=True)
class Auth:
    """What authenticates a request: headers and/or query parameters (e-guma's apikey)."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One attempt on its way through the pipeline, handed to every hook."""

    client: httpx.Client
    attempt: Attempt
    auth: Auth
    secrets: tuple[str, ...]
    # Strings of our own request (names, emails...): a provider's error text may repeat them.
    echoes: tuple[str, ...]
    # The request body as it will be sent (Fourvenues: with every ticket's qr_code filled in).
    body: dict[str, Any]
    # The ticket codes of `body`, in ticket order (Fourvenues only; empty elsewhere).
    codes: list[str] = field(default_factory=list)

    @property
    def account(self) -> AccountConfig:
        return self.attempt.account

    def said(self, detail: object) -> str:
        """The provider's text `detail`, safe to put into a message (see worker.redaction)."""
        return scrub(detail, secrets=self.secrets, echoes=self.echoes)


@dataclass(frozen=True)
class ProbeResult:
    """The answer of a harmless call to a real account (`ticketrelay accounts check`)."""

    ok: bool
    reason: str
    # ok, but something the operator should know (e.g. lookups cannot confirm absence).
    warning: bool = False


class Adapter:
    """Base of every provider adapter. Subclasses set the class attributes and override the
    hooks below `# --- hooks`; `issue` and `request` are the shared machinery."""

    name: ClassVar[str]
    label: ClassVar[str]
    # The provider's documented request body, validated by intake before anything is sent.
    payload_model: ClassVar[type[BaseModel]]
    # The path of this provider's simulator below the sandbox URL (worker/settings.py's
    # sandbox_accounts builds the sandbox accounts' base_url from it).
    sandbox_route: ClassVar[str]
    # Where the provider's error text is, in order (see base.error_detail).
    error_keys: ClassVar[tuple[str, ...]] = ("message", "error")

    # --- the pipeline --------------------------------------------------------------------

    def issue(self, client: httpx.Client, attempt: Attempt) -> Outcome:
        """Make (or confirm) the tickets for this key. Never raises for an HTTP or network
        problem: those become an Outcome."""
        problem = self.missing_credentials(attempt.account)
        if problem is not None:
            refused = failed(
                "auth_error",
                f"{self.label}: {problem}. This is a configuration problem: nothing was sent to "
                "the provider.",
            )
            return keep_doubt(refused, attempt.in_doubt)
        body = self.prepare(attempt)
        call = Call(
            client=client,
            attempt=attempt,
            auth=self.auth(attempt.account),
            secrets=account_secrets(attempt.account),
            echoes=payload_echoes(attempt.payload),
            body=body,
            codes=self.codes_of(body),
        )
        # Whatever this call concludes, an earlier attempt's unresolved doubt stays: a RETRY
        # stays "may have created", a FAILED becomes NEEDS_REVIEW.
        return keep_doubt(self._issue(call), attempt.in_doubt)

    def _issue(self, call: Call) -> Outcome:
        if self.must_reconcile(call.attempt):
            settled = self.reconcile(call)
            if settled is not None:
                return settled
        method, path, kwargs = self.create_request(call)
        response = self.request(call.client, call.account, method, path, label=self.label, **kwargs)
        if isinstance(response, Outcome):
            return response
        detail = error_detail(response, self.error_keys)
        if response.is_success:
            return self.parse_created(call, response, detail)
        if self.is_duplicate(response, detail):
            return self.on_duplicate(call, response, detail)
        return self.classify(call, response, detail)

    def request(
        self,
        client: httpx.Client,
        account: AccountConfig,
        method: str,
        path: str,
        *,
        label: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response | Outcome:
        """One authenticated request to `path` below the account's API base; a transport
        problem or a malformed base_url becomes an Outcome (never an exception)."""
        auth = self.auth(account)
        request = build_request(
            client,
            method,
            self.url(account, path),
            params={**auth.params, **(params or {})} or None,
            headers={"Accept": "application/json", **auth.headers, **(headers or {})},
            json=json,
        )
        if isinstance(request, Outcome):
            return request
        return send(client, request, label=label)

    # --- registry facts ----------------------------------------------------------------------

    def missing_credentials(self, account: AccountConfig) -> str | None:
        """Why this account cannot authenticate at all, or None. Names the setting, never its
        value. Default: an api_key."""
        if account.api_key is None or not account.api_key.get_secret_value():
            return f"account {account.provider}.{account.name}: api_key is not set"
        return None

    def new_generation_refusal(self, payload: dict[str, Any] | None) -> str | None:
        """Why issuing a new generation (a new key) of this booking would not be safe, or None."""
        if payload is None:
            return "the message was rejected: there is no valid payload to issue"
        return None

    def initial_codes(self, payload: dict[str, Any] | None) -> list[str | None] | None:
        """Codes to store in the row before its first call (see codes.py); None: none."""
        return None

    def forget(self) -> None:
        """Drop what this process learned from the provider's answers (tests start afresh)."""

    # --- hooks -------------------------------------------------------------------------------

    def url(self, account: AccountConfig, path: str) -> str:
        """The full URL of `path` (relative to the API's base)."""
        return join_url(account.base_url, path)

    def auth(self, account: AccountConfig) -> Auth:
        raise NotImplementedError

    def prepare(self, attempt: Attempt) -> dict[str, Any]:
        """The body to send; the stored payload is never changed in place."""
        return attempt.payload

    def codes_of(self, body: dict[str, Any]) -> list[str]:
        return []

    def must_reconcile(self, attempt: Attempt) -> bool:
        """Look up before creating? Default: when an earlier attempt may have created tickets."""
        return attempt.in_doubt

    def reconcile(self, call: Call) -> Outcome | None:
        """What an earlier attempt created: an Outcome settles this attempt (ISSUED reconciled,
        RETRY, NEEDS_REVIEW); None means "proven absent: sending is safe". Default: None, for a
        provider whose own dedup (a key replay, a duplicate answer) settles a repeated send."""
        return None

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        """(method, path, keyword arguments for `request`) of the create call."""
        raise NotImplementedError

    def parse_created(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        raise NotImplementedError

    def is_duplicate(self, response: httpx.Response, detail: str | None) -> bool:
        """Is this error answer the provider's "already exists" for what we sent?"""
        return False

    def on_duplicate(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        return self.classify(call, response, detail)

    def classify(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        """A non-2xx answer that is not a duplicate: the default table of base.py."""
        return classify_response(
            response, label=self.label, detail=detail, secrets=call.secrets, echoes=call.echoes
        )

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        """A harmless call that shows whether the account works (credentials accepted, the
        lookup route answers as documented). Must create nothing."""
        raise NotImplementedError


def probe_problem(answer: httpx.Response | Outcome, label: str) -> ProbeResult | None:
    """The ProbeResult for an answer that shows the account cannot work (no connection,
    credentials refused, a redirect, a server error); None when the adapter must judge it."""
    if isinstance(answer, Outcome):
        message = answer.error.message if answer.error is not None else "no answer"
        return ProbeResult(False, message)
    status = answer.status_code
    if status in (401, 403):
        what = "missing or invalid credentials" if status == 401 else "a permission is missing"
        return ProbeResult(False, f"{label} refused the credentials (HTTP {status}, {what})")
    if 300 <= status < 400:
        return ProbeResult(False, f"{label} answered a redirect (HTTP {status}): check base_url")
    if status == 429:
        return ProbeResult(False, f"{label} is rate limiting this account (HTTP 429): try again later")
    if status >= 500:
        return ProbeResult(False, f"{label} failed with HTTP {status}: try again later")
    return None
