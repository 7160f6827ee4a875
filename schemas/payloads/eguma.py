"""e-guma POST /ticketing/booking.json body (providers/source/eguma-book-tickets.txt)."""

from typing import Self

from pydantic import Field, model_validator

from schemas.payloads._common import Email, IsoDateOrDateTime, NonEmpty, PayloadModel


class EgumaItem(PayloadModel):
    category_id: NonEmpty
    quantity: int = Field(ge=1, le=1000)


class EgumaCustomer(PayloadModel):
    first_name: NonEmpty
    last_name: NonEmpty
    email: Email


class EgumaBooking(PayloadModel):
    reservation_id: NonEmpty | None = None
    product_id: NonEmpty
    starts_at: IsoDateOrDateTime  # for day slots the date alone
    items: list[EgumaItem] = Field(min_length=1, max_length=100)
    customer: EgumaCustomer
    language: NonEmpty | None = None  # added on the newest page of the docs

    @model_validator(mode="after")
    def _category_once(self) -> Self:
        categories = [item.category_id for item in self.items]
        if len(categories) != len(set(categories)):
            raise ValueError("each category_id may appear only once per booking")
        return self
