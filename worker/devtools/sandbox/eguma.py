"""e-guma ticketing API v1 simulator, from developers.e-guma.ch (shared/providers/).

Served under {sandbox}/eguma/v1, the API key in the query string (`?apikey=KEY`):
  GET  /ticketing/products.json
  GET  /ticketing/products/{id}/availabilities.json?from=YYYY-MM-DD&to=YYYY-MM-DD
  POST /ticketing/reservation.json          60-minute hold -> {reservation_id, expires_at}
  POST /ticketing/cancel-reservation.json   {reservation_id}
  POST /ticketing/booking.json              Idempotency-Key required (idempotency.py)
  POST /ticketing/cancel-booking.json       {booking_id}: only by the key that booked
  GET  /ticketing/orders.json               updated_at_after/before, order_number, last_name

A key belongs to a user of a merchant (the account it opens): idempotency records are per
merchant and endpoint, a booking can be cancelled only with the key (user) that created it.
Errors: plain text or {"error": code, "message": text} (switch error_format); the codes are
the ticketing pages' validation_error (400) and not_found (404), and for undocumented cases
the names below. Times without a zone are local (Europe/Zurich) on the sandbox clock.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from worker.devtools.sandbox import checks
from worker.devtools.sandbox.catalogue import MERCHANT_LANGUAGE, PRODUCTS, Product
from worker.devtools.sandbox.checks import Invalid, json_body
from worker.devtools.sandbox.clock import EGUMA_ZONE, dotnet_local
from worker.devtools.sandbox.core import SimContext
from worker.devtools.sandbox.idempotency import IdempotencyStore
from worker.devtools.sandbox.ids import ticket_number
from worker.devtools.sandbox.truth import IssuedTicket
from worker.devtools.sandbox.wire import Route, SandboxReply, SandboxRequest

BASE = "/v1/ticketing"
HOLD = timedelta(minutes=60)
_CODES = {
    400: "validation_error",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    422: "unprocessable_entity",
    429: "too_many_requests",
}


@dataclass
class Reservation:
    id: str
    account: str
    product_id: str
    slot: datetime
    quantity: int
    expires_at: datetime  # naive local
    state: str = "active"  # active | used | cancelled


@dataclass
class Booking:
    id: str
    reference: str
    account: str
    user: str  # the API key that created it
    idempotency_key: str
    product_id: str
    slot: datetime
    language: str
    customer: dict[str, Any]
    items: list[dict[str, Any]]
    tickets: list[dict[str, str]]
    created_at: float
    updated_at: float
    status: str = "completed"  # completed | cancelled
    checked_in: set[str] = field(default_factory=set)


class EgumaSim:
    name = "eguma"
    prefix = "eguma"

    def __init__(self) -> None:
        self._routes = [
            Route("GET", BASE + "/products.json", self._products),
            Route("GET", BASE + "/products/{id}/availabilities.json", self._availabilities),
            Route("POST", BASE + "/reservation.json", self._reserve),
            Route("POST", BASE + "/cancel-reservation.json", self._cancel_reservation),
            Route("POST", BASE + "/booking.json", self._booking),
            Route("POST", BASE + "/cancel-booking.json", self._cancel_booking),
            Route("GET", BASE + "/orders.json", self._orders),
        ]
        self.reset()

    def reset(self) -> None:
        self.store = IdempotencyStore()
        self.bookings: dict[str, Booking] = {}
        self.reservations: dict[str, Reservation] = {}
        self.booked: Counter[tuple[str, datetime]] = Counter()  # tickets per (product, slot)
        self.by_number: dict[str, str] = {}  # ticket_number -> booking id

    def routes(self, switches: Mapping[str, Any]) -> list[Route]:
        return self._routes

    def error_reply(
        self, status: int, message: str, switches: Mapping[str, Any], code: str | None = None
    ) -> SandboxReply:
        if switches.get("error_format") == "json":
            name = code or _CODES.get(status, "server_error")
            return SandboxReply.json(status, {"error": name, "message": message})
        return SandboxReply.text(status, message)

    def handle(
        self, route: Route, params: dict[str, str], request: SandboxRequest, ctx: SimContext
    ) -> SandboxReply:
        user = request.query.get("apikey")
        account = ctx.account_for(user)
        if account is None or user is None:
            return self.error_reply(401, "No valid API key provided", ctx.switches)
        documented = route.handler == self._booking
        if (
            not documented
            and "idempotency-key" in request.headers
            and ctx.switches["key_on_other_endpoints"] == "reject"
        ):
            return self.error_reply(
                400, "The Idempotency-Key header is not supported by this endpoint", ctx.switches
            )
        try:
            return route.handler(request, ctx, account, user, **params)
        except Invalid as exc:
            return self.error_reply(exc.status, exc.message, ctx.switches, exc.code)

    def check_in(self, number: str) -> None:
        booking_id = self.by_number.get(number)
        if booking_id is None:
            raise ValueError(f"no e-guma ticket {number!r}")
        self.bookings[booking_id].checked_in.add(number)

    # ---- catalogue -----------------------------------------------------------------------
    def _products(self, request: SandboxRequest, ctx: SimContext, account: str, user: str) -> SandboxReply:
        products = [
            {
                "id": p.id,
                "name": p.name.get(MERCHANT_LANGUAGE) or next(iter(p.name.values())),
                "name_translations": p.name,
                "description": "",
                "description_translations": {lang: "" for lang in p.name},
                "is_active": True,
                "slot_type": p.slot_type,
                "updated_at": "2026-01-01T00:00:00",
                "categories": [
                    {"id": c.id, "name": c.name, "age_from": None, "age_to": None} for c in p.categories
                ],
            }
            for p in PRODUCTS.values()
        ]
        return SandboxReply.json(200, {"company_name": "Sandbox AG", "currency": "CHF", "products": products})

    def _availabilities(
        self, request: SandboxRequest, ctx: SimContext, account: str, user: str, id: str
    ) -> SandboxReply:
        product = _product(id)
        today = ctx.clock.local().date()
        first = max(_query_date(request.query, "from", today), today)
        last = _query_date(request.query, "to", first)
        if last < first:
            raise Invalid("to must not be before from", code="validation_error")
        now = ctx.clock.local()
        slots = [s for s in product.slots_between(first, last) if _closing(product, s) > now]
        out = [
            {
                "slot_type": product.slot_type,
                "starts_at": _slot_text(product, s),
                "closing_at": _closing(product, s).strftime("%Y-%m-%dT%H:%M:%S"),
                "availability_count": self._left(product, s, ctx),
                "prices": [
                    {
                        "category_id": c.id,
                        "price_in_cents": c.price_in_cents,
                        "min_quantity": c.min_quantity,
                        "max_quantity": c.max_quantity,
                        "allow_zero_quantity": c.allow_zero_quantity,
                    }
                    for c in product.categories
                ],
            }
            for s in slots
        ]
        return SandboxReply.json(
            200,
            {
                "company_name": "Sandbox AG",
                "product_name": product.name.get(MERCHANT_LANGUAGE) or next(iter(product.name.values())),
                "currency": "CHF",
                "availabilities": out,
            },
        )

    def _left(self, product: Product, slot: datetime, ctx: SimContext) -> int | None:
        if product.capacity is None:
            return None
        now = ctx.clock.local()
        held = sum(
            r.quantity
            for r in self.reservations.values()
            if r.product_id == product.id and r.slot == slot and r.state == "active" and r.expires_at > now
        )
        return max(0, product.capacity - self.booked[(product.id, slot)] - held)

    # ---- reservations --------------------------------------------------------------------
    def _reserve(self, request: SandboxRequest, ctx: SimContext, account: str, user: str) -> SandboxReply:
        body = _body(request)
        product, slot = self._slot_of(body, ctx)
        items = _items(body, product, positive=True)
        quantity = sum(i["quantity"] for i in items)
        self._capacity(product, slot, quantity, ctx)
        expires = ctx.clock.local() + HOLD
        reservation = Reservation(_uuid(ctx), account, product.id, slot, quantity, expires)
        self.reservations[reservation.id] = reservation
        return SandboxReply.json(200, {"reservation_id": reservation.id, "expires_at": dotnet_local(expires)})

    def _cancel_reservation(
        self, request: SandboxRequest, ctx: SimContext, account: str, user: str
    ) -> SandboxReply:
        body = _body(request)
        rid = checks.field(body, "reservation_id", "string", required=True)
        reservation = self.reservations.get(rid)
        if reservation is None or reservation.account != account:
            raise Invalid("Reservation not found", 404, "not_found")
        if reservation.state == "active":
            reservation.state = "cancelled"
        return SandboxReply.json(200, {"reservation_id": rid})

    # ---- booking -------------------------------------------------------------------------
    def _booking(self, request: SandboxRequest, ctx: SimContext, account: str, user: str) -> SandboxReply:
        key = (request.headers.get("idempotency-key") or "").strip()
        if not key:
            raise Invalid("The Idempotency-Key header is required", code="validation_error")
        return self.store.run(
            scope=(account, "booking", key),
            body=request.body,
            ctx=ctx,
            process=lambda: self._book(request, ctx, account, user, key),
            refuse=lambda status, code, message: self.error_reply(status, message, ctx.switches, code),
        )

    def _book(
        self, request: SandboxRequest, ctx: SimContext, account: str, user: str, key: str
    ) -> SandboxReply:
        try:
            return self._book_checked(request, ctx, account, user, key)
        except Invalid as exc:
            return self.error_reply(exc.status, exc.message, ctx.switches, exc.code)

    def _book_checked(
        self, request: SandboxRequest, ctx: SimContext, account: str, user: str, key: str
    ) -> SandboxReply:
        body = _body(request)
        product, slot = self._slot_of(body, ctx)
        items = _items(body, product, positive=False)
        customer = checks.field(body, "customer", "object", required=True)
        for name in ("first_name", "last_name", "email"):
            checks.field(customer, name, "string", "customer.", required=True)
        language = checks.field(body, "language", "string")
        if language is not None and language not in product.languages:
            raise Invalid(
                f'"language" must be one of the product\'s languages: {", ".join(product.languages)}',
                code="validation_error",
            )
        if language is None:
            language = MERCHANT_LANGUAGE if MERCHANT_LANGUAGE in product.languages else product.languages[0]
        reservation = self._reservation_for(body, account, ctx)
        quantity = sum(i["quantity"] for i in items)
        if reservation is not None:
            reservation.state = "used"  # its hold is released into this booking
        try:
            self._capacity(product, slot, quantity, ctx)
        except Invalid:
            if reservation is not None:
                reservation.state = "active"
            raise
        booking_id = _uuid(ctx)
        tickets = [
            {"ticket_number": ticket_number(ctx.rng), "category_id": item["category_id"]}
            for item in items
            for _ in range(item["quantity"])
        ]
        now = ctx.clock.now()
        booking = Booking(
            id=booking_id,
            reference=f"T{10015 + len(self.bookings)}",
            account=account,
            user=user,
            idempotency_key=key,
            product_id=product.id,
            slot=slot,
            language=language,
            customer=dict(customer),
            items=items,
            tickets=tickets,
            created_at=now,
            updated_at=now,
        )
        self.bookings[booking_id] = booking
        self.booked[(product.id, slot)] += quantity
        for t in tickets:
            self.by_number[t["ticket_number"]] = booking_id
        issued = [
            IssuedTicket(t["ticket_number"], t["ticket_number"], account, key, booking=booking_id)
            for t in tickets
        ]
        ctx.tally.created(issued, key, identities=[key])
        out = {
            "booking_id": booking_id,
            "booking_reference": booking.reference,
            "tickets": tickets,
            "language": language,
        }
        return SandboxReply.json(int(ctx.switches["create_status"]), out)

    def _reservation_for(self, body: dict[str, Any], account: str, ctx: SimContext) -> Reservation | None:
        rid = checks.field(body, "reservation_id", "string")
        if rid is None:
            return None
        status = int(ctx.switches["reservation_error_status"])
        reservation = self.reservations.get(rid)
        if reservation is None or reservation.account != account:
            raise Invalid("Unknown reservation_id", status, "reservation_not_found")
        if reservation.state == "used":
            raise Invalid("The reservation was already used for a booking", status, "reservation_used")
        if reservation.state == "cancelled":
            raise Invalid("The reservation was cancelled", status, "reservation_cancelled")
        if reservation.expires_at <= ctx.clock.local():
            raise Invalid("The reservation has expired", status, "reservation_expired")
        return reservation

    def _slot_of(self, body: dict[str, Any], ctx: SimContext) -> tuple[Product, datetime]:
        product_id = checks.field(body, "product_id", "string", required=True)
        product = _product(product_id)
        raw = checks.field(body, "starts_at", "string", required=True)
        starts = _local_time(raw, product)
        slot = product.slot(starts)
        if slot is None:
            raise Invalid(f"The product has no availability starting at {raw}", code="validation_error")
        if ctx.switches["closing_enforced"] == "yes" and _closing(product, slot) <= ctx.clock.local():
            raise Invalid("The sale for this availability is closed", code="validation_error")
        return product, slot

    def _capacity(self, product: Product, slot: datetime, quantity: int, ctx: SimContext) -> None:
        left = self._left(product, slot, ctx)
        if left is not None and quantity > left:
            raise Invalid(
                f"Not enough tickets available ({left} left)",
                int(ctx.switches["sold_out_status"]),
                "sold_out",
            )

    # ---- cancel --------------------------------------------------------------------------
    def _cancel_booking(
        self, request: SandboxRequest, ctx: SimContext, account: str, user: str
    ) -> SandboxReply:
        body = _body(request)
        booking_id = checks.field(body, "booking_id", "string", required=True)
        ctx.tally.cancel_calls[booking_id] += 1
        booking = self.bookings.get(booking_id)
        # Only the key (user) that created the booking: any other gets not_found, even of the
        # same merchant.
        if booking is None or booking.user != user:
            raise Invalid("Booking not found", 404, "not_found")
        status = int(ctx.switches["cancel_refused_status"])
        if booking.status == "cancelled":
            raise Invalid("The booking is already cancelled", status, "already_cancelled")
        if booking.slot <= ctx.clock.local():
            raise Invalid("The booking cannot be cancelled after the start", status, "already_started")
        if booking.checked_in:
            raise Invalid("A ticket of this booking was checked in", status, "checked_in")
        booking.status = "cancelled"
        booking.updated_at = ctx.clock.now()
        self.booked[(booking.product_id, booking.slot)] -= len(booking.tickets)
        for t in booking.tickets:
            ctx.tally.set_status(t["ticket_number"], "cancelled")
        return SandboxReply.json(
            200,
            {
                "booking_id": booking.id,
                "booking_reference": booking.reference,
                "cancelled_tickets": [{"ticket_number": t["ticket_number"]} for t in booking.tickets],
            },
        )

    # ---- orders --------------------------------------------------------------------------
    def _orders(self, request: SandboxRequest, ctx: SimContext, account: str, user: str) -> SandboxReply:
        q = request.query
        zone_utc = ctx.switches["orders_time_zone"] == "utc"
        after, before = _stamp_param(q, "updated_at_after"), _stamp_param(q, "updated_at_before")
        out = []
        for b in self.bookings.values():
            updated = _stamp(b.updated_at, zone_utc)
            if (
                b.account != account
                or ("order_number" in q and q["order_number"] != b.reference)
                or ("last_name" in q and q["last_name"] != b.customer.get("last_name"))
                or (after is not None and updated < after)
                or (before is not None and updated > before)
            ):
                continue
            out.append(self._order(b, zone_utc, ctx.switches["orders_show_tickets"] == "yes"))
        return SandboxReply.json(200, {"orders": out})

    def _order(self, b: Booking, zone_utc: bool, show_tickets: bool) -> dict[str, Any]:
        product = PRODUCTS[b.product_id]
        lines = []
        total = 0
        for item in b.items:
            category = product.category(item["category_id"])
            price = category.price_in_cents if category else 0
            total += price * item["quantity"]
            line: dict[str, Any] = {
                "product_id": product.id,
                "starts_at": _slot_text(product, b.slot),
                "category_id": item["category_id"],
                "quantity": item["quantity"],
                "price_in_cents": price,
                "total_in_cents": price * item["quantity"],
            }
            if show_tickets:
                line["tickets"] = [
                    {"ticket_number": t["ticket_number"]}
                    for t in b.tickets
                    if t["category_id"] == item["category_id"]
                ]
            lines.append(line)
        return {
            "id": b.id,
            "created_at": _stamp(b.created_at, zone_utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "updated_at": _stamp(b.updated_at, zone_utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "order_number": b.reference,
            "status": b.status,
            "currency": "CHF",
            "language": b.language,
            "location": "web",
            "note": None,
            "tags": [],
            "discount_in_cents": 0,
            "grand_total_in_cents": total,
            "promocode": None,
            "promocode_name": None,
            "customer": {
                "id": None,
                "title": None,
                "first_name": b.customer.get("first_name"),
                "last_name": b.customer.get("last_name"),
                "company": None,
                "email": b.customer.get("email"),
            },
            "order_lines": lines,
            "payments": [],
        }


# ---- helpers -------------------------------------------------------------------------------


def _body(request: SandboxRequest) -> dict[str, Any]:
    return json_body(request, "The request body is not valid JSON", code="validation_error")


def _product(product_id: str) -> Product:
    product = PRODUCTS.get(product_id)
    if product is None:
        raise Invalid("Product not found", 404, "not_found")
    return product


def _items(body: dict[str, Any], product: Product, positive: bool) -> list[dict[str, Any]]:
    items = checks.field(body, "items", "array", required=True)
    if not items:
        raise Invalid("At least one item is required", code="validation_error")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        where = f"items[{i}]."
        if not isinstance(item, dict):
            raise Invalid(f'"items[{i}]" must be an object', code="validation_error")
        category_id = checks.field(item, "category_id", "string", where, required=True)
        quantity = checks.field(item, "quantity", "integer", where, required=True)
        category = product.category(category_id)
        if category is None:
            raise Invalid(f"Unknown category_id {category_id} for this product", code="validation_error")
        if category_id in seen:
            raise Invalid(f"category_id {category_id} appears more than once", code="validation_error")
        seen.add(category_id)
        if quantity < 0 or (positive and quantity == 0):
            bound = "greater than 0" if positive else "greater than or equal to 0"
            raise Invalid(f'"{where}quantity" must be {bound}', code="validation_error")
        if quantity == 0 and not category.allow_zero_quantity:
            raise Invalid(
                f"A quantity of 0 is not allowed for category {category_id}", code="validation_error"
            )
        if not positive and quantity > 0 and not category.min_quantity <= quantity <= category.max_quantity:
            raise Invalid(
                f"The quantity for category {category_id} must be between "
                f"{category.min_quantity} and {category.max_quantity}",
                code="validation_error",
            )
        out.append({"category_id": category_id, "quantity": quantity})
    return out


def _local_time(raw: str, product: Product) -> datetime:
    """starts_at as the availabilities write it: local, no zone; day slots: the date alone or
    the date with 00:00:00."""
    if product.slot_type == "day" and checks.is_date(raw):
        return datetime.combine(date.fromisoformat(raw), datetime.min.time())
    moment = checks.parse_datetime(raw)
    if moment is None:
        raise Invalid('"starts_at" must be an ISO 8601 date and time', code="validation_error")
    if moment.tzinfo is not None:
        raise Invalid(
            '"starts_at" must be the local start time without a time zone, as the availabilities give it',
            code="validation_error",
        )
    return moment


def _closing(product: Product, slot: datetime) -> datetime:
    return slot - product.closing_before


def _slot_text(product: Product, slot: datetime) -> str:
    return slot.strftime("%Y-%m-%d") if product.slot_type == "day" else slot.strftime("%Y-%m-%dT%H:%M:%S")


def _query_date(query: Mapping[str, str], name: str, default: date) -> date:
    raw = query.get(name)
    if raw is None:
        return default
    if not checks.is_date(raw):
        raise Invalid(f'"{name}" must be a date YYYY-MM-DD', code="validation_error")
    return date.fromisoformat(raw)


def _stamp(epoch: float, utc: bool) -> datetime:
    zone = UTC if utc else EGUMA_ZONE
    return datetime.fromtimestamp(epoch, zone).replace(tzinfo=None, microsecond=0)


def _stamp_param(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    moment = checks.parse_datetime(raw)
    if moment is None or moment.tzinfo is not None:
        raise Invalid(f'"{name}" must be a date and time like 2019-06-04T23:15:14', code="validation_error")
    return moment


def _uuid(ctx: SimContext) -> str:
    return str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
