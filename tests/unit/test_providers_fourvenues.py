"""Fourvenues Integrations adapter against scripted answers, one precise case each."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from provider_fakes import (
    HOSTS,
    FakeProvider,
    account,
    attempt,
    fv_not_found,
    fv_payload,
    fv_ticket,
    html_404,
)

from worker.providers import get_provider
from worker.providers.base import OutcomeKind

fourvenues = get_provider("fourvenues")
CREATE = "/integrations/tickets/"
CODES = ["TRCODEAAAAAAAAA1", "TRCODEAAAAAAAAA2"]


def keeps_codes(keeps: bool = True) -> None:
    """As if an earlier answer had shown whether this host gives tickets the codes we send."""
    fourvenues._keeps_codes[HOSTS["fourvenues"]] = keeps  # type: ignore[attr-defined]


def by_code(code: str) -> str:
    return f"/integrations/tickets/by-code/{code}"


def code_route(code: str) -> str:
    return f"/integrations/tickets/code/{code}"


def created(*tickets: dict[str, object]) -> httpx.Response:
    data: object = tickets[0] if len(tickets) == 1 else list(tickets)
    return httpx.Response(200, json={"success": True, "data": data})


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.fourvenues.test",
        "https://api.fourvenues.test/",
        "https://api.fourvenues.test/integrations",
        "https://api.fourvenues.test/integrations/",
    ],
)
def test_create_is_under_integrations_and_never_doubled(base_url: str) -> None:
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket(CODES[0])))
    a = attempt("fourvenues", fv_payload(), acct=account("fourvenues", base_url=base_url), qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED
    [request] = fake.requests
    assert request.url.path == CREATE
    assert request.url.host == "api.fourvenues.test"


def test_in_doubt_lookup_is_under_integrations_and_the_envelope_means_absent() -> None:
    keeps_codes()
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), fv_not_found())
        .on("POST", CREATE, created(fv_ticket(CODES[0])))
    )
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert [r.url.path for r in fake.requests] == [by_code(CODES[0]), CREATE]
    # The lookup never went to {host}/tickets/by-code/ (the route that does not exist).
    assert not any(r.url.path.startswith("/tickets/") for r in fake.requests)


def test_in_doubt_found_by_code_is_reconciled_without_a_create() -> None:
    fake = FakeProvider()
    for i, code in enumerate(CODES):
        fake.on("GET", by_code(code), created(fv_ticket(code, i)))
    a = attempt("fourvenues", fv_payload(2), number=2, in_doubt=True, qr_codes=CODES)
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert [t.code for t in outcome.tickets] == CODES
    assert outcome.provider_reference == "pay1"
    assert fake.calls("POST") == []


def test_by_code_unknown_route_falls_back_to_code_route() -> None:
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), html_404())
        .on("GET", code_route(CODES[0]), created(fv_ticket(CODES[0])))
    )
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert fake.calls("POST") == []


def test_code_route_envelope_counts_as_absent_too() -> None:
    keeps_codes()
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), html_404())
        .on("GET", code_route(CODES[0]), fv_not_found())
        .on("POST", CREATE, created(fv_ticket(CODES[0])))
    )
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED
    assert len(fake.calls("POST")) == 1


@pytest.mark.parametrize(
    "answer",
    [
        html_404(),
        httpx.Response(404),  # empty body
        httpx.Response(404, json={"message": "Cannot GET /integrations/tickets/by-code/X"}),
        httpx.Response(404, json={"statusCode": 404, "error": "Not Found", "message": "Cannot GET"}),
        httpx.Response(404, json={"success": False}),  # the envelope without its error text
        httpx.Response(404, text="Not Found"),
        httpx.Response(405, text="Method Not Allowed"),
    ],
    ids=["html", "empty", "framework-json", "boom-json", "bare-envelope", "text", "405"],
)
def test_a_404_that_is_not_fourvenues_own_never_leads_to_a_second_create(answer: httpx.Response) -> None:
    fake = FakeProvider()
    fake.on("GET", by_code(CODES[0]), answer).on("GET", code_route(CODES[0]), answer)
    fake.on("POST", CREATE, created(fv_ticket(CODES[0])))
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert outcome.error is not None and outcome.error.type == "lookup_unavailable"
    assert fake.calls("POST") == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"success": True, "data": fv_ticket("SOMEONE-ELSE")}),
        httpx.Response(200, text="<html>ok</html>"),
        httpx.Response(200, json={"success": False, "error": "x"}),
        httpx.Response(400, json={"success": False, "error": "bad code"}),
        httpx.Response(503, text="busy"),
        httpx.Response(500, json={"error": "boom"}),
    ],
    ids=["other-code", "html-200", "success-false", "400", "503", "500"],
)
def test_any_other_lookup_answer_cannot_confirm_and_sends_nothing(answer: httpx.Response) -> None:
    fake = FakeProvider().on("GET", by_code(CODES[0]), answer).on("POST", CREATE, created(fv_ticket("X")))
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert fake.calls("POST") == []


def test_lookup_auth_refusal_in_doubt_is_needs_review() -> None:
    fake = FakeProvider().on("GET", by_code(CODES[0]), httpx.Response(401, json={"error": "bad key"}))
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "auth_error"
    assert fake.calls("POST") == []


def test_some_codes_found_some_absent_is_needs_review_with_the_found_ones() -> None:
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), created(fv_ticket(CODES[0])))
        .on("GET", by_code(CODES[1]), fv_not_found())
    )
    a = attempt("fourvenues", fv_payload(2), number=2, in_doubt=True, qr_codes=CODES)
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "partial_issue"
    assert [t.code for t in outcome.tickets] == [CODES[0]]
    assert fake.calls("POST") == []


# --- 2: a 503 may have created the tickets --------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_create_leaves_the_booking_in_doubt_and_the_next_attempt_looks_up_first(status: int) -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, httpx.Response(status, text="gateway"))
        .on("GET", by_code(CODES[0]), created(fv_ticket(CODES[0])))
    )
    with fake.client() as client:
        first = fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1], key="k1"))
        assert first.kind is OutcomeKind.RETRY and first.may_have_created
        again = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1], key="k1")
        outcome = fourvenues.issue(client, again)
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert len(fake.calls("POST")) == 1


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("t"), httpx.RemoteProtocolError("dropped")])
def test_timeout_or_dropped_connection_is_in_doubt(exc: Exception) -> None:
    fake = FakeProvider().on("POST", CREATE, exc)
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created


# --- 5: never invent ticket codes --------------------------------------------------------------


def test_one_object_for_two_tickets_looks_the_missing_code_up() -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, created(fv_ticket(CODES[0], 1)))
        .on("GET", by_code(CODES[1]), created(fv_ticket(CODES[1], 2)))
    )
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [(t.ticket_id, t.code) for t in outcome.tickets] == [("tkt1", CODES[0]), ("tkt2", CODES[1])]


def test_one_object_for_two_tickets_and_the_other_absent_is_needs_review_without_invented_codes() -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, created(fv_ticket(CODES[0])))
        .on("GET", by_code(CODES[1]), fv_not_found())
    )
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "unconfirmed_tickets"
    assert [t.code for t in outcome.tickets] == [CODES[0]]  # CODES[1] is not in the result
    assert outcome.provider_reference == "pay1"
    assert len(fake.calls("POST")) == 1


def test_one_object_for_two_tickets_and_the_lookup_down_retries_without_resending() -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, created(fv_ticket(CODES[0])))
        .on("GET", by_code(CODES[1]), httpx.Response(503))
    )
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert outcome.tickets == []


def test_quantity_beyond_the_ticket_objects_cannot_be_confirmed_by_code() -> None:
    # The docs' own example: quantity 2, one ticket object, one ticket in the answer.
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket(CODES[0])))
    with fake.client() as client:
        outcome = fourvenues.issue(
            client, attempt("fourvenues", fv_payload(1, quantity=2), qr_codes=CODES[:1])
        )
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert [t.code for t in outcome.tickets] == [CODES[0]]
    assert outcome.error is not None and "codes of its own" in outcome.error.message
    assert fake.calls("GET") == []  # nothing the lookup by code could find


def test_an_answer_listing_every_ticket_is_issued_with_the_providers_codes() -> None:
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket("P6J21FF2S")))
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [t.code for t in outcome.tickets] == ["P6J21FF2S"]  # what the provider confirmed


def test_sent_body_carries_the_stored_codes_and_the_producers() -> None:
    payload = fv_payload(2)
    payload["tickets"][0]["qr_code"] = "PRODUCER-1"
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket("PRODUCER-1", 1), fv_ticket(CODES[1], 2)))
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", payload, qr_codes=[None, CODES[1]]))
    assert outcome.kind is OutcomeKind.ISSUED
    import json

    sent = json.loads(fake.requests[0].content)
    assert [t["qr_code"] for t in sent["tickets"]] == ["PRODUCER-1", CODES[1]]
    assert "qr_code" not in payload["tickets"][1]  # the stored payload is untouched


def test_v1_auth_headers_and_missing_v1_credentials() -> None:
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket(CODES[0])))
    acct = account("fourvenues", auth="v1", api_key=None, integration_id="int-1", secret="sec-1")
    with fake.client() as client:
        assert (
            fourvenues.issue(client, attempt("fourvenues", fv_payload(), acct=acct)).kind
            is OutcomeKind.ISSUED
        )
        no_secret = account("fourvenues", auth="v1", api_key=None, integration_id="int-1")
        refused = fourvenues.issue(client, attempt("fourvenues", fv_payload(), acct=no_secret))
    assert fake.requests[0].headers["integration_id"] == "int-1"
    assert fake.requests[0].headers["secret"] == "sec-1"
    assert "x-api-key" not in fake.requests[0].headers
    assert refused.kind is OutcomeKind.FAILED and refused.error is not None
    assert refused.error.type == "auth_error" and len(fake.requests) == 1


def test_a_duplicate_code_after_an_absent_lookup_is_looked_up_again_never_failed() -> None:
    keeps_codes()
    exists = httpx.Response(400, json={"success": False, "error": "qr_code already exists"})
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), fv_not_found(), created(fv_ticket(CODES[0])))
        .on("POST", CREATE, exists)
    )
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert [r.method for r in fake.requests] == ["GET", "POST", "GET"]


def test_a_duplicate_code_that_no_lookup_shows_is_needs_review_in_doubt_and_failed_otherwise() -> None:
    keeps_codes()
    exists = httpx.Response(409, json={"success": False, "message": "Duplicate qr_code"})
    fake = FakeProvider().on("GET", by_code(CODES[0]), fv_not_found()).on("POST", CREATE, exists)
    with fake.client() as client:
        doubtful = fourvenues.issue(
            client, attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
        )
        clean = fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
    assert doubtful.kind is OutcomeKind.NEEDS_REVIEW
    assert doubtful.error is not None and doubtful.error.type == "duplicate"
    assert clean.kind is OutcomeKind.FAILED
    assert clean.error is not None and clean.error.type == "duplicate"


# --- sent codes the provider may not keep -------------------------------------------------------


def test_absent_codes_prove_nothing_until_an_answer_shows_the_codes_are_kept() -> None:
    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), fv_not_found())
        .on("POST", CREATE, created(fv_ticket("X")))
    )
    a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
    with fake.client() as client:
        outcome = fourvenues.issue(client, a)
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert fake.calls("POST") == []


def test_an_answer_with_our_code_teaches_that_absence_is_proof() -> None:
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket(CODES[0])))
    with fake.client() as client:
        assert fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1])).kind is (
            OutcomeKind.ISSUED
        )
        fake.on("GET", by_code(CODES[1]), fv_not_found())
        again = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[1:])
        outcome = fourvenues.issue(client, again)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert len(fake.calls("POST")) == 2


def test_an_answer_with_codes_of_its_own_makes_a_lost_answer_needs_review() -> None:
    """The docs' example sends qr_code QRCODE123ABC and answers code P6J21FF2S."""
    fake = FakeProvider().on("POST", CREATE, created(fv_ticket("P6J21FF2S")))
    with fake.client() as client:
        fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
        fake.on("GET", by_code(CODES[1]), fv_not_found())
        fake.on("GET", CREATE, httpx.Response(200, json={"success": True, "data": []}))
        again = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[1:])
        outcome = fourvenues.issue(client, again)
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert len(fake.calls("POST")) == 1


def listed(*tickets: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "data": list(tickets)})


def person(code: str, n: int, payment: str, email: str = "jane@example.com") -> dict[str, object]:
    return fv_ticket(code, n, payment_id=payment, event_id="ev1", email=email, name="Jane Roe")


def test_one_object_for_two_tickets_is_confirmed_by_the_events_listing() -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, created(person("GEN1", 1, "pay1")))
        .on(
            "GET",
            CREATE,
            listed(person("GEN1", 1, "pay1"), person("GEN2", 2, "pay1"), person("Z", 3, "pay9")),
        )
    )
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [(t.ticket_id, t.code) for t in outcome.tickets] == [("tkt1", "GEN1"), ("tkt2", "GEN2")]
    [listing] = fake.calls("GET", CREATE)
    assert listing.url.params["event_id"] == "ev1" and listing.url.params["date_field"] == "created_at"
    assert listing.url.params["limit"] == "500"


def test_the_listing_is_read_only_around_the_answers_date_by_the_providers_clock() -> None:
    """The purchase was made while our request ran: the window is the answer's Date (the
    provider's clock, however far ours is off) less the request's time, not an hour of the
    event's tickets."""
    answer = created(person("GEN1", 1, "pay1"))
    answer.headers["Date"] = "Tue, 15 Dec 2026 10:00:00 GMT"  # our clock says otherwise
    fake = (
        FakeProvider()
        .on("POST", CREATE, answer)
        .on("GET", CREATE, listed(person("GEN1", 1, "pay1"), person("GEN2", 2, "pay1")))
    )
    with fake.client() as client:
        outcome = fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    assert outcome.kind is OutcomeKind.ISSUED and len(outcome.tickets) == 2
    [listing] = fake.calls("GET", CREATE)
    start = datetime.fromisoformat(listing.url.params["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(listing.url.params["end_date"].replace("Z", "+00:00"))
    date = datetime(2026, 12, 15, 10, 0, tzinfo=UTC)
    assert date - timedelta(seconds=5) <= start < date < end <= date + timedelta(seconds=5)


def test_without_a_date_the_listing_window_is_ours_widened_for_skew() -> None:
    fake = (
        FakeProvider()
        .on("POST", CREATE, created(person("GEN1", 1, "pay1")))
        .on("GET", CREATE, listed(person("GEN1", 1, "pay1"), person("GEN2", 2, "pay1")))
    )
    now = datetime.now(UTC)
    with fake.client() as client:
        fourvenues.issue(client, attempt("fourvenues", fv_payload(2), qr_codes=CODES))
    [listing] = fake.calls("GET", CREATE)
    start = datetime.fromisoformat(listing.url.params["start_date"].replace("Z", "+00:00"))
    assert start <= now - timedelta(minutes=29)


def test_a_lost_answer_matched_in_the_listing_is_named_for_review_never_reported_issued() -> None:
    """Names and emails cannot tell this booking from the same customer's other purchase of the
    rate in the window, so the one match is evidence for an operator, not this booking's tickets."""
    fake = FakeProvider().on("POST", CREATE, created(person("GEN0", 0, "pay0")))
    with fake.client() as client:
        # An earlier booking taught the rate's event and that codes are not kept.
        fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
        fake.on("GET", by_code(CODES[1]), fv_not_found())
        fake.on("GET", CREATE, listed(person("GEN0", 0, "pay0", "x@example.com"), person("GEN7", 7, "pay7")))
        outcome = fourvenues.issue(
            client, attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[1:])
        )
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW and not outcome.tickets
    assert outcome.error is not None and "pay7" in outcome.error.message
    assert len(fake.calls("GET", CREATE)) == 1  # the listing was consulted
    assert len(fake.calls("POST")) == 1  # and nothing was sent again


def test_two_purchases_for_the_same_people_are_ambiguous() -> None:
    fake = FakeProvider().on("POST", CREATE, created(person("GEN0", 0, "pay0", "x@example.com")))
    with fake.client() as client:
        fourvenues.issue(client, attempt("fourvenues", fv_payload(), qr_codes=CODES[:1]))
        fake.on("GET", by_code(CODES[1]), fv_not_found())
        fake.on("GET", CREATE, listed(person("GEN7", 7, "pay7"), person("GEN8", 8, "pay8")))
        outcome = fourvenues.issue(
            client, attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[1:])
        )
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert len(fake.calls("POST")) == 1


def test_an_account_setting_can_say_whether_sent_codes_are_kept() -> None:
    """Read only if the settings define `qr_codes_kept` (a field asked for, not yet there)."""

    class Account:
        def __init__(self, base: object, kept: bool) -> None:
            self._base, self.qr_codes_kept = base, kept

        def __getattr__(self, name: str) -> object:
            return getattr(self._base, name)

    fake = (
        FakeProvider()
        .on("GET", by_code(CODES[0]), fv_not_found())
        .on("POST", CREATE, created(fv_ticket(CODES[0])))
    )
    for kept, posts in ((True, 1), (False, 1)):
        a = attempt("fourvenues", fv_payload(), number=2, in_doubt=True, qr_codes=CODES[:1])
        a = dataclasses.replace(a, account=Account(a.account, kept))  # type: ignore[arg-type]
        with fake.client() as client:
            outcome = fourvenues.issue(client, a)
        assert outcome.kind is (OutcomeKind.ISSUED if kept else OutcomeKind.NEEDS_REVIEW)
        assert len(fake.calls("POST")) == posts
