"""Valid sample payloads per provider (tests, demos). `n` makes them distinct."""

from __future__ import annotations

from typing import Any


def sample_payload(provider: str, n: int = 1, *, tickets: int = 1) -> dict[str, Any]:
    if provider == "remypass":
        return {
            "bookingId": f"BOOKING-{n}",
            "film": "The Matrix Reloaded",
            "startTime": "2026-12-25T19:30:00.000Z",
            "seat": "A12",
            "row": "A",
            "screen": "Screen 1",
            "customer": {"name": "Jane Roe", "email": f"jane.roe{n}@example.com"},
            "sendEmail": False,
        }
    if provider == "fourvenues":
        return {
            "quantity": tickets,
            "ticket_rate_id": "tkrt_12345",
            "sale_type": "online",
            "tickets": [
                {
                    "price_id": "price_001",
                    "total_price": 50,
                    "fee": 5,
                    "full_name": "Jane Roe",
                    "email": f"jane.roe{n}@example.com",
                    "phone": "+34666666666",
                }
                for _ in range(tickets)
            ],
            "channel_id": "chnl_abc123",
        }
    if provider == "fourvenues_channels":
        return {
            "quantity": tickets,
            "ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a0",
            "tickets": [
                {
                    "price_id": "1234567890",
                    "total_price": 10,
                    "fee": 1,
                    "full_name": "Jane Roe",
                    "email": f"jane.roe{n}@example.com",
                    "gender": 0,
                    "country_code": "ES",
                }
                for _ in range(tickets)
            ],
        }
    if provider == "eguma":
        return {
            "product_id": "64ad1bb1973b861c040c99bd",
            "starts_at": "2026-03-19T10:00:00",
            "items": [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": tickets}],
            "customer": {
                "first_name": "Jane",
                "last_name": "Roe",
                "email": f"jane.roe{n}@example.com",
            },
        }
    raise ValueError(f"unknown provider {provider!r}")
