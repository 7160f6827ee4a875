"""The sample bookings: one per provider, the single source of the demo's bookings
(`ticketrelay demo`, `dev --demo`, the benches) and of the ready-to-send files in examples/
(written by `python -m worker.devtools.sandbox.samples examples`; a test keeps the committed
files equal to what this writes). `sample_payload` gives the simulators' tests distinct variants.

Here, not in examples/ files read at run time: the sandbox must stand alone (it imports nothing of
the product and reads no file of the checkout), and the demo, dev and the benches then need no
path to the clone.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

_DEMO_CUSTOMER = {"full_name": "Demo Customer", "email": "demo.customer@example.com"}

# The payloads of the sample bookings, as a producer sends them (without their bookingId, which
# is per run). Their ids are in the simulators' catalogue (catalogue.py).
SAMPLE_BOOKINGS: dict[str, dict[str, Any]] = {
    "remypass": {
        "film": "The Matrix Reloaded",
        "startTime": "2026-12-25T19:30:00.000Z",
        "seat": "A12",
        "row": "A",
        "screen": "Screen 1",
        "customer": {"name": "Demo Customer", "email": "demo.customer@example.com"},
    },
    "fourvenues": {
        "quantity": 2,
        "ticket_rate_id": "tkrt_12345",
        "sale_type": "online",
        "channel_id": "chnl_abc123",
        "tickets": [
            {"price_id": "price_001", "total_price": 50, "fee": 5, **_DEMO_CUSTOMER},
            {
                "price_id": "price_001",
                "total_price": 50,
                "fee": 5,
                "full_name": "Demo Friend",
                "email": "demo.friend@example.com",
            },
        ],
    },
    "fourvenues_channels": {
        "quantity": 1,
        "ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a0",
        "tickets": [{"price_id": "1234567890", "total_price": 10, "fee": 1, **_DEMO_CUSTOMER}],
    },
    "eguma": {
        "product_id": "64ad1bb1973b861c040c99bd",
        "starts_at": "2026-12-19T10:00:00",
        "items": [{"category_id": "64ad1bb1973b861c040c99c1", "quantity": 2}],
        "customer": {"first_name": "Demo", "last_name": "Customer", "email": "demo.customer@example.com"},
    },
}
# How a provider appears in the sample message_ids.
_SHORT = {"fourvenues_channels": "channels"}


def sample_envelopes(run: str, source: str) -> list[dict[str, Any]]:
    """One envelope per provider: message_id `{source}-{run}-{provider}`, the RemyPass bookingId
    `BK-{source}-{run}` (new per run, as RemyPass refuses a repeated one), metadata source."""
    envelopes = []
    for provider, booking in SAMPLE_BOOKINGS.items():
        payload = copy.deepcopy(booking)
        if provider == "remypass":
            payload = {"bookingId": f"BK-{source}-{run}", **payload}
        envelopes.append(
            {
                "message_id": f"{source}-{run}-{_SHORT.get(provider, provider)}",
                "provider": provider,
                "payload": payload,
                "metadata": {"source": source},
            }
        )
    return envelopes


def example_files() -> dict[str, str]:
    """The files of examples/ that hold the sample bookings, by name, as they are committed."""
    envelopes = sample_envelopes("1", "example")
    lines = {env["provider"]: json.dumps(env) + "\n" for env in envelopes}
    return {f"{provider}.json": line for provider, line in lines.items()} | {
        "bookings.jsonl": "".join(lines.values())
    }


def write_examples(directory: Path) -> None:
    for name, text in example_files().items():
        (directory / name).write_text(text)


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


if __name__ == "__main__":
    write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"))
