"""Ground truth of one simulated provider: what it really did, whatever the client heard."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

# Normalised ticket states in the ground truth (each provider's own word is in "provider_status").
STATES = ("active", "voided", "cancelled", "refunded")


@dataclass
class IssuedTicket:
    id: str  # the provider's ticket (pass) id
    code: str  # what goes in the QR code: serialNumber, code, qr_code, ticket_number
    account: str
    identity: str  # the booking identity it counts under in `creations`
    status: str = "active"
    booking: str | None = None  # e-guma booking_id

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "code": self.code,
            "account": self.account,
            "identity": self.identity,
            "status": self.status,
        }
        if self.booking is not None:
            out["booking"] = self.booking
        return out


@dataclass
class Tally:
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    # Creations per booking identity: RemyPass bookingId, e-guma Idempotency-Key (one per
    # booking committed under it), Fourvenues each ticket's qr_code as sent (or the code the
    # provider generated when none was sent). Anything above 1 is a ticket issued twice.
    creations: Counter[str] = field(default_factory=Counter)
    creations_by_request: Counter[str] = field(default_factory=Counter)
    issued: dict[str, IssuedTicket] = field(default_factory=dict)  # by ticket id
    # Revoke / refund / cancel calls per ticket (RemyPass, Fourvenues) or booking (e-guma),
    # refused ones included.
    cancel_calls: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)  # "METHOD /template" -> requests
    emails_sent: int = 0
    # Arrival times of the latest requests, to check rate limits from the provider's side.
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def created(
        self, tickets: list[IssuedTicket], request_key: str, identities: list[str] | None = None
    ) -> None:
        """Record tickets; `identities` (default: each ticket's) are the creations counted."""
        for ticket in tickets:
            self.issued[ticket.id] = ticket
        for identity in identities if identities is not None else [t.identity for t in tickets]:
            self.creations[identity] += 1
        self.creations_by_request[request_key] += 1

    def set_status(self, ticket_id: str, status: str) -> None:
        assert status in STATES, status
        self.issued[ticket_id].status = status

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tickets": len(self.issued),
            "faults": dict(self.faults),
            "creations": dict(self.creations),
            "creations_by_request": dict(self.creations_by_request),
            "issued": [t.as_dict() for t in self.issued.values()],
            "cancel_calls": dict(self.cancel_calls),
            "routes": dict(self.routes),
            "emails_sent": self.emails_sent,
            "recent_arrivals": list(self.arrivals),
        }
