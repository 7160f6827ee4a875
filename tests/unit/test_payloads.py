"""The payload schemas hold each provider's documented rules: no stricter, no looser.

The examples come from the providers' own pages (shared/providers/source/).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas.errors import describe
from schemas.payloads import (
    ChannelTicketsRequest,
    EgumaBooking,
    FourvenuesTicketsRequest,
)

# The Integrations page's request example, less `referral_id`: the example itself sends both ids,
# which the same page forbids ("ReferralId or ChannelId can be passed but not both").
FOURVENUES_DOCS_EXAMPLE: dict[str, Any] = {
    "quantity": 2,
    "ticket_rate_id": "tkrt_12345",
    "sale_type": "online",
    "tickets": [
        {
            "price_id": "price_001",
            "total_price": 50,
            "qr_code": "QRCODE123ABC",
            "fee": 5,
            "full_name": "John Doe",
            "email": "john@example.com",
            "phone": "+15555555555",
            "gender": "male",
            "birthday": "1990-01-01",
            "address": "123 Main St",
            "country_code": "US",
            "postal_code": "12345",
            "personal_document_type": "passport",
            "personal_document_number": "A1234567",
            "supplements": [{"supplement_id": "sup_001", "price": 10}],
        }
    ],
    "channel_id": "chnl_abc123",
}

CHANNELS_DOCS_EXAMPLE: dict[str, Any] = {
    "quantity": 1,
    "ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a0",
    "tickets": [
        {
            "price_id": "1234567890",
            "qr_code": "ABCDE12345",
            "total_price": 10,
            "fee": 1,
            "full_name": "John Doe",
            "phone": "+34666666666",
            "email": "john@fourvenues.com",
            "gender": "0",
            "birthday": "1990-01-01",
            "address": "123 Main St, New York, NY 10001",
            "postal_code": "10001",
            "country_code": "ES",
            "personal_document_type": "dni",
            "personal_document_number": "1234567890",
            "warranty": {"enabled": True, "hours": 12},
            "answers": [{"question_id": "1234567890", "answer": "Answer"}],
            "supplements": [{"supplement_id": "1234567890", "price": 1}],
        }
    ],
}

EGUMA_DOCS_EXAMPLE: dict[str, Any] = {
    "product_id": "64ad1bb1973b861c040c99bd",
    "starts_at": "2026-03-19T10:00:00",
    "items": [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": 2}],
    "customer": {"first_name": "John", "last_name": "Doe", "email": "john.doe@example.com"},
}


def _with(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(example)
    body.update(changes)
    return body


def _refused(model: type[BaseModel], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return describe(info.value, "payload")


# --- Fourvenues: quantity and the tickets list ----------------------------------------------------


def test_fourvenues_docs_example_quantity_two_with_one_ticket_object_is_accepted() -> None:
    FourvenuesTicketsRequest.model_validate(FOURVENUES_DOCS_EXAMPLE)


@pytest.mark.parametrize("quantity", [1, 2, 5])
def test_fourvenues_quantity_need_not_equal_the_number_of_ticket_objects(quantity: int) -> None:
    two = [copy.deepcopy(t) for t in FOURVENUES_DOCS_EXAMPLE["tickets"] * 2]
    two[1]["qr_code"] = "QRCODE456DEF"
    FourvenuesTicketsRequest.model_validate(_with(FOURVENUES_DOCS_EXAMPLE, quantity=quantity, tickets=two))


@pytest.mark.parametrize("quantity", [2, 3])
def test_channels_quantity_need_not_equal_the_number_of_ticket_objects(quantity: int) -> None:
    ChannelTicketsRequest.model_validate(_with(CHANNELS_DOCS_EXAMPLE, quantity=quantity))


@pytest.mark.parametrize("model", [FourvenuesTicketsRequest, ChannelTicketsRequest])
@pytest.mark.parametrize("quantity", [0, -1, True, "2", 1.5])
def test_fourvenues_quantity_is_still_a_positive_integer(model: type[BaseModel], quantity: Any) -> None:
    example = FOURVENUES_DOCS_EXAMPLE if model is FourvenuesTicketsRequest else CHANNELS_DOCS_EXAMPLE
    assert "payload.quantity" in _refused(model, _with(example, quantity=quantity))


@pytest.mark.parametrize("model", [FourvenuesTicketsRequest, ChannelTicketsRequest])
def test_fourvenues_an_empty_tickets_list_is_refused(model: type[BaseModel]) -> None:
    example = FOURVENUES_DOCS_EXAMPLE if model is FourvenuesTicketsRequest else CHANNELS_DOCS_EXAMPLE
    assert "payload.tickets" in _refused(model, _with(example, tickets=[]))


# --- Fourvenues: the rules the docs state stay ----------------------------------------------------


def test_fourvenues_channel_id_and_referral_id_together_are_refused() -> None:
    reason = _refused(FourvenuesTicketsRequest, _with(FOURVENUES_DOCS_EXAMPLE, referral_id="rfrl_xyz789"))
    assert "mutually exclusive" in reason


def test_fourvenues_all_tickets_share_one_price_id() -> None:
    tickets = [copy.deepcopy(t) for t in FOURVENUES_DOCS_EXAMPLE["tickets"] * 2]
    tickets[1].update(qr_code="QRCODE456DEF", price_id="price_002")
    assert "same price_id" in _refused(
        FourvenuesTicketsRequest, _with(FOURVENUES_DOCS_EXAMPLE, tickets=tickets)
    )


@pytest.mark.parametrize("field", ["email", "full_name"])
def test_fourvenues_email_and_full_name_are_required_for_each_ticket(field: str) -> None:
    body = copy.deepcopy(FOURVENUES_DOCS_EXAMPLE)
    del body["tickets"][0][field]
    assert f"payload.tickets.0.{field}" in _refused(FourvenuesTicketsRequest, body)


def test_channels_full_name_email_and_phone_are_the_rates_to_require() -> None:
    body = copy.deepcopy(CHANNELS_DOCS_EXAMPLE)
    for field in ("full_name", "email", "phone"):
        del body["tickets"][0][field]
    ChannelTicketsRequest.model_validate(body)


# --- Fourvenues: where the docs are silent, the provider answers ----------------------------------


def test_fourvenues_prices_have_no_range_of_ours_but_must_be_finite() -> None:
    body = copy.deepcopy(FOURVENUES_DOCS_EXAMPLE)
    body["tickets"][0].update(total_price=-5, fee=-1)
    FourvenuesTicketsRequest.model_validate(body)
    body["tickets"][0]["total_price"] = float("inf")
    assert "payload.tickets.0.total_price" in _refused(FourvenuesTicketsRequest, body)


def test_fourvenues_optional_texts_may_be_blank() -> None:
    body = copy.deepcopy(FOURVENUES_DOCS_EXAMPLE)
    body["tickets"][0].update(phone="", address="", postal_code="", gender="")
    FourvenuesTicketsRequest.model_validate(body)
    channels = copy.deepcopy(CHANNELS_DOCS_EXAMPLE)
    channels["tickets"][0].update(phone="", full_name="", address="")
    ChannelTicketsRequest.model_validate(channels)


def test_channels_warranty_hours_have_no_range_of_ours() -> None:
    body = copy.deepcopy(CHANNELS_DOCS_EXAMPLE)
    body["tickets"][0]["warranty"] = {"enabled": False, "hours": 0}
    ChannelTicketsRequest.model_validate(body)


@pytest.mark.parametrize("code", ["ES", "US", "ES-MD", "GB-ENG", "FR-75"])
def test_channels_country_code_takes_both_iso_3166_forms(code: str) -> None:
    body = copy.deepcopy(CHANNELS_DOCS_EXAMPLE)
    body["tickets"][0]["country_code"] = code
    ChannelTicketsRequest.model_validate(body)


@pytest.mark.parametrize("code", ["es", "Spain", "E", "ES-", "ES-MADRID"])
def test_channels_country_code_that_is_no_iso_3166_code_is_refused(code: str) -> None:
    body = copy.deepcopy(CHANNELS_DOCS_EXAMPLE)
    body["tickets"][0]["country_code"] = code
    assert "ISO 3166" in _refused(ChannelTicketsRequest, body)


@pytest.mark.parametrize("model", [FourvenuesTicketsRequest, ChannelTicketsRequest])
def test_fourvenues_two_tickets_with_one_qr_code_are_refused(model: type[BaseModel]) -> None:
    # ticketrelay's own rule: the codes are how a repeated attempt finds this booking's tickets.
    example = FOURVENUES_DOCS_EXAMPLE if model is FourvenuesTicketsRequest else CHANNELS_DOCS_EXAMPLE
    body = _with(example, tickets=[copy.deepcopy(t) for t in example["tickets"] * 2])
    assert "qr_code" in _refused(model, body)


# --- e-guma: quantity -----------------------------------------------------------------------------


def test_eguma_an_item_of_quantity_zero_is_accepted() -> None:
    items = [
        {"category_id": "64ad1bb1973b861c040c99c1", "quantity": 2},
        {"category_id": "64ad1bb1973b861c040c99c2", "quantity": 0},
    ]
    EgumaBooking.model_validate(_with(EGUMA_DOCS_EXAMPLE, items=items))


def test_eguma_a_booking_of_zero_tickets_is_eguma_to_answer() -> None:
    # The docs ask for at least one item, not for a total above zero; allow_zero_quantity and
    # min_quantity are the slot's, which only e-guma knows.
    items = [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": 0}]
    EgumaBooking.model_validate(_with(EGUMA_DOCS_EXAMPLE, items=items))


@pytest.mark.parametrize("quantity", [-1, True, "1", 1.0])
def test_eguma_quantity_is_an_integer_of_at_least_zero(quantity: Any) -> None:
    items = [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": quantity}]
    assert "payload.items.0.quantity" in _refused(EgumaBooking, _with(EGUMA_DOCS_EXAMPLE, items=items))


def test_eguma_items_may_not_be_empty_and_each_category_comes_once() -> None:
    assert "payload.items" in _refused(EgumaBooking, _with(EGUMA_DOCS_EXAMPLE, items=[]))
    twice = [{"category_id": "c1", "quantity": 1}, {"category_id": "c1", "quantity": 0}]
    assert "only once" in _refused(EgumaBooking, _with(EGUMA_DOCS_EXAMPLE, items=twice))


# --- e-guma: starts_at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "starts_at",
    [
        "2026-03-19T10:00:00",  # the docs' example
        "2026-03-19",  # a day slot: the date alone
        "2026-03-19T00:00:00",  # a day slot: or the date with 00:00:00
        "2026-03-19T10:00",
        "2026-03-19T09:00:00.0000000",  # e-guma's own .NET style (reservation expires_at)
        "2026-03-19T09:00:00.5",
        "2024-02-29T23:59:59",
    ],
)
def test_eguma_starts_at_local_iso_8601_is_accepted(starts_at: str) -> None:
    EgumaBooking.model_validate(_with(EGUMA_DOCS_EXAMPLE, starts_at=starts_at))


@pytest.mark.parametrize(
    "starts_at",
    [
        "2026-03-19T10:00:00Z",  # a zone: the slots are local time without one
        "2026-03-19T10:00:00+01:00",
        "2026-03-19T10:00:00.000-05:00",
        "2026-03-19 10:00:00",  # not ISO 8601's T
        "2026-W12-4",  # a week date: not what List of Availabilities gives
        "20260319",
        "20260319T100000",
        "19.03.2026",
        "2026-02-30",
        "2026-03-19T24:00:00",
        "2026-03-19T10:60",
        "2026-03-19T10",
        "",
    ],
)
def test_eguma_starts_at_that_is_not_local_iso_8601_is_refused(starts_at: str) -> None:
    reason = _refused(EgumaBooking, _with(EGUMA_DOCS_EXAMPLE, starts_at=starts_at))
    where, _, text = reason.partition(": ")
    assert where == "payload.starts_at"
    # The format, never the value: the same text whatever was sent.
    assert text == _refused(EgumaBooking, _with(EGUMA_DOCS_EXAMPLE, starts_at="x")).partition(": ")[2]
    assert "without a zone" in text


def test_eguma_docs_example_and_language_are_accepted() -> None:
    EgumaBooking.model_validate(EGUMA_DOCS_EXAMPLE)
    EgumaBooking.model_validate(_with(EGUMA_DOCS_EXAMPLE, language="de", reservation_id="r-1"))
