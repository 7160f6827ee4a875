"""Fourvenues Integrations API POST /integrations/tickets/ body
(providers/source/fourvenues-integrations-tickets.txt)."""

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.payloads._common import Email, IsoDate, Money, NonEmpty, PayloadModel, Text


class Supplement(PayloadModel):
    supplement_id: NonEmpty
    price: Money


class FourvenuesTicket(PayloadModel):
    price_id: NonEmpty
    total_price: Money  # fees included
    qr_code: NonEmpty | None = None  # derived from the idempotency key when absent
    fee: Money | None = None
    full_name: NonEmpty  # "Email and FullName are required for each ticket"
    email: Email
    phone: Text | None = None
    gender: Text | None = None
    birthday: IsoDate | None = None
    address: Text | None = None
    country_code: Text | None = None
    postal_code: Text | None = None
    personal_document_type: Text | None = None
    personal_document_number: Text | None = None
    supplements: list[Supplement] | None = None


class FourvenuesTicketsRequest(PayloadModel):
    # "Number of tickets to create". Its relation to the tickets list is not documented, and the
    # docs' own example sends quantity 2 with one ticket object: the provider decides.
    quantity: int = Field(ge=1, le=500)
    ticket_rate_id: NonEmpty
    sale_type: Literal["online"] | None = None
    tickets: list[FourvenuesTicket] = Field(min_length=1, max_length=500)
    channel_id: NonEmpty | None = None
    referral_id: NonEmpty | None = None

    @model_validator(mode="after")
    def _documented_rules(self) -> Self:
        if self.channel_id is not None and self.referral_id is not None:
            raise ValueError("channel_id and referral_id are mutually exclusive: pass one, not both")
        if len({t.price_id for t in self.tickets}) > 1:
            raise ValueError("all tickets must have the same price_id (one rate, one price)")
        # Not a provider rule but ours: the qr_codes are how a repeated attempt finds the tickets
        # of this booking, so two tickets may not share one.
        codes = [t.qr_code for t in self.tickets if t.qr_code is not None]
        if len(codes) != len(set(codes)):
            raise ValueError("qr_code values must be unique within a booking")
        return self
