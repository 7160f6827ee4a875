"""Fourvenues channels-service adapter against scripted answers: GET /tickets proves only what
it lists, and a created answer is never padded with codes the provider did not confirm."""

from __future__ import annotations

import httpx
import pytest
from provider_fakes import FakeProvider, attempt, channels_payload

from worker.providers import get_provider
from worker.providers.base import OutcomeKind

channels = get_provider("fourvenues_channels")
CODES = ["TRCHANNELAAAAAA1", "TRCHANNELAAAAAA2"]


def ticket(code: str, n: int = 1) -> dict[str, object]:
    return {"_id": f"c{n}", "qr_code": code, "status": "active", "price": {"name": "Early Bird"}}


def listing(*tickets: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "data": list(tickets)})


def by_filter(answers: dict[str, httpx.Response], unfiltered: httpx.Response | None = None) -> object:
    """GET /tickets answering per qr_code filter (an empty list for other codes), and
    `unfiltered` without the filter."""

    def handler(request: httpx.Request) -> httpx.Response:
        code = request.url.params.get("qr_code")
        if code is None:
            return unfiltered or listing()
        return answers.get(code) or listing()

    return handler


def test_in_doubt_every_code_listed_is_reconciled_without_a_create() -> None:
    fake = FakeProvider().on(
        "GET", "/tickets", by_filter({c: listing(ticket(c, i)) for i, c in enumerate(CODES)})
    )
    with fake.client() as client:
        outcome = channels.issue(
            client,
            attempt("fourvenues_channels", channels_payload(2), number=2, in_doubt=True, qr_codes=CODES),
        )
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert [t.code for t in outcome.tickets] == CODES
    assert fake.calls("POST") == []


OTHER = ticket("KNOWN-CODE", 9)


@pytest.mark.parametrize(
    "answer",
    [
        listing(),  # no filter proof: the channel lists nothing at all
        listing(ticket("SOMEONE-ELSE")),  # the filter is ignored
        by_filter({}, unfiltered=listing(OTHER)),  # any filtered list is empty, even a known code's
        by_filter({"KNOWN-CODE": listing(OTHER, ticket("X"))}, unfiltered=listing(OTHER)),
        httpx.Response(404, text="<html></html>"),
        httpx.Response(400, json={"message": "qr_code is not allowed"}),
    ],
    ids=["empty", "filter-ignored", "empties-every-filter", "loose-filter", "no-route", "400"],
)
def test_in_doubt_a_list_that_does_not_prove_the_filter_proves_nothing(answer: object) -> None:
    fake = FakeProvider().on("GET", "/tickets", answer).on("POST", "/tickets", listing(ticket(CODES[0])))
    with fake.client() as client:
        outcome = channels.issue(
            client,
            attempt("fourvenues_channels", channels_payload(), number=2, in_doubt=True, qr_codes=CODES[:1]),
        )
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert fake.calls("POST") == []


def test_in_doubt_an_empty_list_is_absence_once_a_known_code_shows_the_filter_works() -> None:
    fake = (
        FakeProvider()
        .on("GET", "/tickets", by_filter({"KNOWN-CODE": listing(OTHER)}, unfiltered=listing(OTHER)))
        .on("POST", "/tickets", listing(ticket(CODES[0])))
    )
    with fake.client() as client:
        outcome = channels.issue(
            client,
            attempt("fourvenues_channels", channels_payload(), number=2, in_doubt=True, qr_codes=CODES[:1]),
        )
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert len(fake.calls("POST")) == 1
    lookups = [dict(r.url.params) for r in fake.calls("GET")]
    assert lookups == [{"qr_code": CODES[0]}, {"limit": "1"}, {"qr_code": "KNOWN-CODE"}]


def test_in_doubt_a_transient_lookup_error_retries() -> None:
    fake = FakeProvider().on("GET", "/tickets", httpx.Response(503))
    with fake.client() as client:
        outcome = channels.issue(
            client,
            attempt("fourvenues_channels", channels_payload(), number=2, in_doubt=True, qr_codes=CODES[:1]),
        )
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert fake.calls("POST") == []


def test_503_on_create_is_in_doubt() -> None:
    fake = FakeProvider().on("POST", "/tickets", httpx.Response(503, json={"message": "busy"}))
    with fake.client() as client:
        outcome = channels.issue(
            client, attempt("fourvenues_channels", channels_payload(), qr_codes=CODES[:1])
        )
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created


def test_fewer_tickets_answered_than_sent_are_looked_up_not_invented() -> None:
    fake = (
        FakeProvider().on("POST", "/tickets", listing(ticket(CODES[0]))).on("GET", "/tickets", by_filter({}))
    )
    with fake.client() as client:
        outcome = channels.issue(client, attempt("fourvenues_channels", channels_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert [t.code for t in outcome.tickets] == [CODES[0]]


def test_fewer_tickets_answered_and_the_rest_listed_is_issued() -> None:
    fake = (
        FakeProvider()
        .on("POST", "/tickets", listing(ticket(CODES[0], 1)))
        .on("GET", "/tickets", by_filter({CODES[1]: listing(ticket(CODES[1], 2))}))
    )
    with fake.client() as client:
        outcome = channels.issue(client, attempt("fourvenues_channels", channels_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [(t.ticket_id, t.code, t.category) for t in outcome.tickets] == [
        ("c1", CODES[0], "Early Bird"),
        ("c2", CODES[1], "Early Bird"),
    ]
