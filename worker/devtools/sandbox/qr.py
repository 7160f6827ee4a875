"""What both Fourvenues APIs leave open in the same way: quantity vs. the ticket objects sent,
and the wording of a refused repeated qr_code."""

from __future__ import annotations

from dataclasses import dataclass

from worker.devtools.sandbox.checks import Invalid

DUPLICATE_QR_MESSAGES = {
    "must_be_unique": "qr_code must be unique",
    "already_exists": "A ticket with this qr_code already exists",
    "duplicate": "Duplicate qr_code",
}


@dataclass(frozen=True)
class TicketCount:
    n: int  # ticket objects used, in order
    generated: int  # further tickets made from the last object, with provider-generated codes


def ticket_count(quantity: int | None, objects: int, rule: str) -> TicketCount:
    """How many tickets one create call makes, per the switch quantity_rule:
    "quantity": `quantity` tickets (the docs' example: quantity 2 with one object), the objects
    beyond the first `quantity` ignored, missing ones copied from the last object sent but
    with codes the provider generates; "tickets": one per object, quantity ignored;
    "must_match": 400 unless quantity (when sent) equals the number of objects."""
    if quantity is not None and quantity < 1:
        raise Invalid('"quantity" must be greater than or equal to 1')
    if rule == "tickets" or quantity is None:
        return TicketCount(objects, 0)
    if rule == "must_match":
        if quantity != objects:
            raise Invalid('"quantity" must be equal to the number of tickets')
        return TicketCount(objects, 0)
    return TicketCount(min(quantity, objects), max(0, quantity - objects))
