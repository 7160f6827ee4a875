"""Sample bookings of every provider, for `ticketrelay dev --demo` and the quickstart."""

from __future__ import annotations

import time
from typing import Any


def demo_envelopes(run_id: str | None = None) -> list[dict[str, Any]]:
    run = run_id or time.strftime("%Y%m%dT%H%M%S")
    return [
        {
            "message_id": f"demo-{run}-remypass",
            "provider": "remypass",
            "payload": {
                "bookingId": f"BK-{run}-1",
                "film": "The Matrix Reloaded",
                "startTime": "2026-12-25T19:30:00.000Z",
                "seat": "A12",
                "row": "A",
                "screen": "Screen 1",
                "customer": {"name": "Demo Customer", "email": "demo.customer@example.com"},
            },
            "metadata": {"source": "demo"},
        },
        {
            "message_id": f"demo-{run}-fourvenues",
            "provider": "fourvenues",
            "payload": {
                "quantity": 2,
                "ticket_rate_id": "tkrt_12345",
                "sale_type": "online",
                "channel_id": "chnl_abc123",
                "tickets": [
                    {
                        "price_id": "price_001",
                        "total_price": 50,
                        "fee": 5,
                        "full_name": "Demo Customer",
                        "email": "demo.customer@example.com",
                    },
                    {
                        "price_id": "price_001",
                        "total_price": 50,
                        "fee": 5,
                        "full_name": "Demo Friend",
                        "email": "demo.friend@example.com",
                    },
                ],
            },
            "metadata": {"source": "demo"},
        },
        {
            "message_id": f"demo-{run}-channels",
            "provider": "fourvenues_channels",
            "payload": {
                "quantity": 1,
                "ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a0",
                "tickets": [
                    {
                        "price_id": "1234567890",
                        "total_price": 10,
                        "fee": 1,
                        "full_name": "Demo Customer",
                        "email": "demo.customer@example.com",
                    }
                ],
            },
            "metadata": {"source": "demo"},
        },
        {
            "message_id": f"demo-{run}-eguma",
            "provider": "eguma",
            "payload": {
                "product_id": "64ad1bb1973b861c040c99bd",
                "starts_at": "2026-12-19T10:00:00",
                "items": [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": 2}],
                "customer": {
                    "first_name": "Demo",
                    "last_name": "Customer",
                    "email": "demo.customer@example.com",
                },
            },
            "metadata": {"source": "demo"},
        },
    ]
