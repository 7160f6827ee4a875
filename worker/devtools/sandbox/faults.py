"""Injected faults: what can go wrong between a client and a provider, on demand.

Faults act around the simulated application, on every route (lookups included): a fault
"before" answers in front of it (a gateway's 5xx, a rate limiter's 429, silence) and the
request is never processed; an "after_create" fault lets the application process the request
and then replaces, drops or garbles its answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

KINDS = ("timeout", "drop_after_create", "malformed_after_create")

STATUS_TEXT: dict[int, str] = {
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


@dataclass
class FaultConfig:
    """Faults of one provider; set_faults replaces the whole config."""

    latency_ms: float = 0.0
    # Scripted answers, one consumed per request: {"status": 500}, {"status": 429,
    # "retry_after": 2}, {"status": 500, "after_create": true}, {"kind": "timeout"},
    # {"kind": "drop_after_create"}, {"kind": "malformed_after_create"}.
    fail_next: list[dict[str, Any]] = field(default_factory=list)
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: float | None = None
    timeout_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    # How long the HTTP server stays silent for a "timeout" (beyond the client's timeout).
    timeout_sleep_s: float = 30.0
    # The provider's own rate limit, per API key: more than this many requests within one
    # second answer 429 with Retry-After: 1 (Fourvenues asks for at most 10 per second;
    # RemyPass keys carry unpublished limits). 0: no limit.
    rate_limit_per_s: float = 0.0

    def __post_init__(self) -> None:
        for entry in self.fail_next:
            if not isinstance(entry, dict):
                raise ValueError("fail_next entries must be objects")
            kind, status = entry.get("kind"), entry.get("status")
            if kind is None and not (isinstance(status, int) and 400 <= status <= 599):
                raise ValueError(f"fail_next entry needs a 4xx/5xx status or a kind: {entry}")
            if kind is not None and kind not in KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        rates = ("error_500_rate", "error_503_rate", "rate_429", "timeout_rate", "drop_after_create_rate")
        for name in rates:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "rate_limit_per_s", "timeout_sleep_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")

    def pick(self, rng: random.Random) -> dict[str, Any] | None:
        """The fault for the next request, if any (consumes a scripted one first)."""
        if self.fail_next:
            return self.fail_next.pop(0)
        choices: list[tuple[float, dict[str, Any]]] = [
            (self.error_500_rate, {"status": 500}),
            (self.error_503_rate, {"status": 503}),
            (self.rate_429, {"status": 429, "retry_after": self.retry_after}),
            (self.timeout_rate, {"kind": "timeout"}),
            (self.drop_after_create_rate, {"kind": "drop_after_create"}),
        ]
        if not any(rate for rate, _ in choices):
            return None
        roll, total = rng.random(), 0.0
        for rate, entry in choices:
            total += rate
            if roll < total:
                return entry
        return None


def is_after_create(fault: dict[str, Any]) -> bool:
    return fault.get("kind") in ("drop_after_create", "malformed_after_create") or bool(
        fault.get("after_create")
    )


def fault_name(fault: dict[str, Any]) -> str:
    if fault.get("rate_limited"):
        return "rate_limited"
    kind = fault.get("kind")
    if kind:
        return str(kind)
    suffix = "_after_create" if fault.get("after_create") else ""
    return f"status_{fault['status']}{suffix}"
