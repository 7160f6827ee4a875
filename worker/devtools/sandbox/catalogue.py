"""What each simulated account can sell: Fourvenues rates, e-guma products and slots.

The ids the sample bookings use (examples/*.json, samples.py, the demo) are here, so those
bookings stay valid: Fourvenues rate tkrt_12345 / price_001, channels rate
5f8d0f8b9d2b3b0017b6d8a0 / price 1234567890, e-guma product 64ad1bb1973b861c040c99bd with
category 64ad1bb1973b861c040c99c1 at 10:00 every day. Every account sees the same catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

# ---- Fourvenues Integrations -------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    id: str
    event_id: str
    name: str
    slug: str
    price: float
    # channels-service: fields the rate's settings require of every ticket
    required: tuple[str, ...] = ()


INTEGRATIONS_RATES: dict[str, Rate] = {
    r.id: r
    for r in (
        Rate("tkrt_12345", "Mjo4f9o9h01fdjvmmrgn9aoh4s5IBHzX", "General Access", "general-access", 45.0),
        Rate("tkrt_vip", "Mjo4f9o9h01fdjvmmrgn9aoh4s5IBHzX", "VIP", "vip", 90.0),
        Rate("tkrt_other_event", "Pq2kd81mx03aalvmmrgn9aoh4s5KQmZa", "Early Bird", "early-bird", 20.0),
    )
}

CHANNEL_RATES: dict[str, Rate] = {
    r.id: r
    for r in (
        Rate(
            "5f8d0f8b9d2b3b0017b6d8a0",
            "5f8d0f8b9d2b3b0017b6e1c0",
            "Early Bird",
            "early-bird",
            9.0,
            ("full_name", "email"),
        ),
        Rate(
            "5f8d0f8b9d2b3b0017b6d8a1",
            "5f8d0f8b9d2b3b0017b6e1c0",
            "Named + phone",
            "named-phone",
            15.0,
            ("full_name", "email", "phone"),
        ),
        Rate("5f8d0f8b9d2b3b0017b6d8a2", "5f8d0f8b9d2b3b0017b6e1c1", "Anonymous", "anonymous", 5.0),
    )
}

# ---- e-guma ------------------------------------------------------------------------------

MERCHANT_LANGUAGE = "de"


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    min_quantity: int
    max_quantity: int
    allow_zero_quantity: bool
    price_in_cents: int


@dataclass(frozen=True)
class Product:
    id: str
    name: dict[str, str]  # name_translations: its keys are the product's languages
    slot_type: str  # "time" | "day"
    categories: tuple[Category, ...]
    first_day: date
    last_day: date
    slot_times: tuple[time, ...] = ()  # time slots: the same times every day
    capacity: int | None = None  # per slot; None = unlimited
    closing_before: timedelta = timedelta(hours=1)  # closing_at = start - this

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.name)

    def category(self, category_id: str) -> Category | None:
        return next((c for c in self.categories if c.id == category_id), None)

    def slot(self, starts_at: datetime) -> datetime | None:
        """The slot starting at `starts_at` (naive local), if the product has one."""
        if not self.first_day <= starts_at.date() <= self.last_day:
            return None
        if self.slot_type == "day":
            return starts_at if starts_at.time() == time(0, 0) else None
        return starts_at if starts_at.time() in self.slot_times else None

    def slots_between(self, first: date, last: date) -> list[datetime]:
        out: list[datetime] = []
        day = max(first, self.first_day)
        while day <= min(last, self.last_day):
            times = (time(0, 0),) if self.slot_type == "day" else self.slot_times
            out.extend(datetime.combine(day, t) for t in times)
            day += timedelta(days=1)
        return out


PRODUCTS: dict[str, Product] = {
    p.id: p
    for p in (
        Product(
            id="64ad1bb1973b861c040c99bd",
            name={"de": "Museumseintritt", "en": "Museum entry", "fr": "Entrée du musée"},
            slot_type="time",
            categories=(
                Category("64ad1bb1973b861c040c99c1", "Erwachsene", 1, 20, True, 2500),
                Category("64ad1bb1973b861c040c99c2", "Kinder", 1, 10, True, 1200),
                Category("64ad1bb1973b861c040c99c3", "Gruppe", 2, 4, False, 2000),
            ),
            first_day=date(2026, 1, 1),
            last_day=date(2028, 12, 31),
            slot_times=(time(10, 0), time(14, 0)),
        ),
        Product(
            id="64ad1bb1973b861c040c99be",
            name={"en": "Day pass"},
            slot_type="day",
            categories=(Category("64ad1bb1973b861c040c99c4", "Adult", 1, 5, False, 4000),),
            first_day=date(2026, 1, 1),
            last_day=date(2028, 12, 31),
            capacity=5,
            closing_before=timedelta(hours=-18),  # the day's sale closes at 18:00
        ),
    )
}
