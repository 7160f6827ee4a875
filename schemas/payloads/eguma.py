"""e-guma POST /ticketing/booking.json body (providers/source/eguma-book-tickets.txt)."""

from typing import Self

from pydantic import Field, model_validator

from schemas.payloads._common import Email, LocalDateOrDateTime, NonEmpty, PayloadModel


class EgumaItem(PayloadModel):
    category_id: NonEmpty
    # ">= 0"; whether 0 (or any number) fits the slot is its min_quantity, max_quantity and
    # allow_zero_quantity, which e-guma checks. The docs ask for at least one item, not for a
    # total above zero, so an order of zeros is e-guma's to answer too.
    quantity: int = Field(ge=0, le=1000)


class EgumaCustomer(PayloadModel):
    first_name: NonEmpty
    last_name: NonEmpty
    email: Email


class EgumaBooking(PayloadModel):
    reservation_id: NonEmpty | None = None
    product_id: NonEmpty
    # The slot's starts_at as List of Availabilities gives it (local, no zone); for a day slot
    # the date alone or the date with 00:00:00.
    starts_at: LocalDateOrDateTime
    items: list[EgumaItem] = Field(min_length=1, max_length=100)
    customer: EgumaCustomer
    language: NonEmpty | None = None  # added on the newest page of the docs

    @model_validator(mode="after")
    def _category_once(self) -> Self:  # stated on the newest Book Tickets page
        categories = [item.category_id for item in self.items]
        if len(categories) != len(set(categories)):
            raise ValueError("each category_id may appear only once per booking")
        return self
