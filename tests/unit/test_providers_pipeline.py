"""The providers layer's one pipeline and its registry: a fifth provider fills in hooks only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from provider_fakes import FakeProvider, account, attempt
from pydantic import BaseModel

from schemas.envelope import PROVIDERS as ENVELOPE_PROVIDERS
from schemas.payloads import PAYLOAD_MODELS
from schemas.result import Ticket
from worker.providers import PROVIDER_NAMES, PROVIDERS, build_client, get_provider, sandbox_base_url
from worker.providers.base import Outcome, OutcomeKind, issued, json_or_none, object_list, retry
from worker.providers.pipeline import Adapter, Auth, Call, ProbeResult
from worker.settings import AccountConfig, sandbox_accounts


class ToyBody(BaseModel):
    ref: str


class Toy(Adapter):
    """A provider that dedups nothing and offers GET /orders/{ref} for reconciling."""

    name = "toy"
    label = "Toy"
    payload_model = ToyBody
    sandbox_route = "toy"

    def auth(self, account: AccountConfig) -> Auth:
        assert account.api_key is not None
        return Auth(headers={"Authorization": f"Bearer {account.api_key.get_secret_value()}"})

    def create_request(self, call: Call) -> tuple[str, str, dict[str, Any]]:
        return "POST", "orders", {"json": call.body}

    def parse_created(self, call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        body = json_or_none(response)
        return issued([Ticket(code=body["code"])], body["id"])

    def reconcile(self, call: Call) -> Outcome | None:
        answer = self.request(
            call.client, call.account, "GET", f"orders/{call.body['ref']}", label="Toy lookup"
        )
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code == 404:
            return None
        if answer.is_success:
            return issued([Ticket(code=answer.json()["code"])], answer.json()["id"], reconciled=True)
        return retry("lookup_unconfirmed", "cannot tell", may_have_created=True)

    def is_duplicate(self, response: httpx.Response, detail: str | None) -> bool:
        return response.status_code == 409

    def probe(self, client: httpx.Client, account: AccountConfig) -> ProbeResult:
        return ProbeResult(True, "fine")


toy = Toy()
ORDER = httpx.Response(201, json={"id": "o1", "code": "C1"})


def toy_attempt(**kw: Any) -> Any:
    return attempt("eguma", {"ref": "R1"}, acct=account("eguma", base_url="https://toy.test/api"), **kw)


def test_a_clean_first_attempt_creates_without_looking_up() -> None:
    fake = FakeProvider().on("POST", "/api/orders", ORDER)
    with fake.client() as client:
        outcome = toy.issue(client, toy_attempt())
    assert outcome.kind is OutcomeKind.ISSUED and outcome.provider_reference == "o1"
    [request] = fake.requests
    assert request.headers["authorization"] == "Bearer live-key-123456"
    assert request.headers["accept"] == "application/json"


def test_in_doubt_the_pipeline_reconciles_before_any_create() -> None:
    fake = FakeProvider().on("GET", "/api/orders/R1", ORDER).on("POST", "/api/orders", ORDER)
    with fake.client() as client:
        outcome = toy.issue(client, toy_attempt(number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert [r.method for r in fake.requests] == ["GET"]


def test_in_doubt_and_proven_absent_the_pipeline_creates() -> None:
    fake = FakeProvider().on("GET", "/api/orders/R1", httpx.Response(404)).on("POST", "/api/orders", ORDER)
    with fake.client() as client:
        outcome = toy.issue(client, toy_attempt(number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert [r.method for r in fake.requests] == ["GET", "POST"]


def test_missing_credentials_stop_before_any_request_and_keep_the_doubt() -> None:
    fake = FakeProvider()
    acct = account("eguma", base_url="https://toy.test/api", api_key=None)
    with fake.client() as client:
        fresh = toy.issue(client, attempt("eguma", {"ref": "R1"}, acct=acct))
        doubtful = toy.issue(client, attempt("eguma", {"ref": "R1"}, acct=acct, number=2, in_doubt=True))
    assert fresh.kind is OutcomeKind.FAILED and fresh.error is not None and fresh.error.type == "auth_error"
    assert doubtful.kind is OutcomeKind.NEEDS_REVIEW
    assert fake.requests == []


def test_the_doubt_survives_an_error_answer() -> None:
    fake = FakeProvider().on(
        "POST", "/api/orders", httpx.Response(429), httpx.Response(400, json={"message": "x"})
    )
    with fake.client() as client:
        assert toy.issue(client, toy_attempt()).may_have_created is False
        retried = toy.issue(client, toy_attempt())  # 400 on a clean attempt: failed
        fake.on("GET", "/api/orders/R1", httpx.Response(404)).on("POST", "/api/orders", httpx.Response(429))
        doubtful = toy.issue(client, toy_attempt(number=2, in_doubt=True))
    assert retried.kind is OutcomeKind.FAILED
    assert doubtful.kind is OutcomeKind.RETRY and doubtful.may_have_created  # 429, but in doubt


def test_a_duplicate_answer_goes_to_the_adapters_hook() -> None:
    fake = FakeProvider().on("POST", "/api/orders", httpx.Response(409, json={"message": "exists"}))
    with fake.client() as client:
        outcome = toy.issue(client, toy_attempt())
    # The default on_duplicate is the classification table: 409 is "in progress", retry.
    assert outcome.kind is OutcomeKind.RETRY


def test_a_malformed_base_url_is_a_configuration_failure() -> None:
    acct = account("eguma", base_url="not a url")
    with build_client(acct) as client:  # the real transport: it refuses before connecting
        outcome = toy.issue(client, attempt("eguma", {"ref": "R1"}, acct=acct))
    assert outcome.kind is OutcomeKind.FAILED and outcome.error is not None
    assert outcome.error.type == "configuration_error"


# --- the registry ------------------------------------------------------------------------------


def test_the_registry_is_the_envelopes_list_with_its_payload_models() -> None:
    assert PROVIDER_NAMES == ENVELOPE_PROVIDERS
    for name in PROVIDER_NAMES:
        adapter = get_provider(name)
        assert isinstance(adapter, Adapter) and adapter.name == name
        assert adapter.payload_model is PAYLOAD_MODELS[name]
    with pytest.raises(KeyError):
        get_provider("toy")


def test_sandbox_routes_match_the_sandbox_accounts() -> None:
    url = "http://127.0.0.1:8765"
    for (provider, _name), acct in sandbox_accounts(url).items():
        assert acct.base_url == sandbox_base_url(provider, url)


@pytest.mark.parametrize(
    ("provider", "payload", "refused"),
    [
        ("remypass", {"bookingId": "B"}, True),
        ("fourvenues", {"tickets": [{"qr_code": "MINE"}]}, True),
        ("fourvenues", {"tickets": [{}]}, False),
        ("fourvenues_channels", {"tickets": [{"qr_code": "MINE"}]}, True),
        ("fourvenues_channels", {"tickets": [{}]}, False),
        ("eguma", {"product_id": "p"}, False),
        ("eguma", None, True),
    ],
)
def test_new_generation_rules(provider: str, payload: dict[str, Any] | None, refused: bool) -> None:
    assert (PROVIDERS[provider].new_generation_refusal(payload) is not None) is refused


def test_only_the_fourvenues_apis_store_codes() -> None:
    payload = {"tickets": [{}, {"qr_code": "MINE"}]}
    for name in ("fourvenues", "fourvenues_channels"):
        codes = PROVIDERS[name].initial_codes(payload)
        assert codes is not None and codes[1] is None and isinstance(codes[0], str)
    assert PROVIDERS["remypass"].initial_codes(payload) is None
    assert PROVIDERS["eguma"].initial_codes(payload) is None


def test_fourvenues_v1_needs_both_secrets() -> None:
    fv = get_provider("fourvenues")
    assert fv.missing_credentials(account("fourvenues", auth="v1", api_key=None)) is not None
    assert fv.missing_credentials(account("fourvenues", auth="v1", integration_id="i", secret="s")) is None
    assert get_provider("eguma").missing_credentials(account("eguma", api_key=None)) is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], []),
        ([{"a": 1}, {}], [{"a": 1}, {}]),
        ([{"a": 1}, "x"], None),  # one item that is not an object spoils the listing
        ({"a": 1}, None),  # one object is not a listing
        (None, None),
        ("[]", None),
    ],
)
def test_object_list_accepts_only_an_array_of_objects(value: object, expected: object) -> None:
    assert object_list(value) == expected


def test_object_list_returns_a_copy() -> None:
    value: list[dict[str, Any]] = [{"a": 1}]
    listed = object_list(value)
    assert listed is not None and listed is not value
