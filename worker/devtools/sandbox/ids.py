"""Identifiers the simulated providers hand out (seeded, so runs repeat)."""

from __future__ import annotations

import random

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_MIXED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def hex_id(rng: random.Random, length: int = 24) -> str:
    """A Mongo-style hex id."""
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


def mixed_id(rng: random.Random, length: int = 32) -> str:
    """Fourvenues Integrations ids look like el7yuiyep0006msyw2pri1tem1LpJwSc."""
    return "".join(rng.choice(_MIXED) for _ in range(length))


def short_code(rng: random.Random, length: int = 9) -> str:
    """A ticket code like P6J21FF2S."""
    return "".join(rng.choice(_CODE_ALPHABET) for _ in range(length))


def ticket_number(rng: random.Random) -> str:
    """e-guma: a 19-digit number (QR content)."""
    return str(rng.randrange(10**18, 10**19))
