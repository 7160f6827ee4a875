"""Which simulator switch positions the conformance suite runs, per provider.

Only the switches that change how a booking is created or looked up are varied (the others,
refunds, reservations, sold-out answers, keep their default). Where the product of their
values is small it is run whole; where it is not, every pair of values of any two factors
appears in at least one combination (a greedy all-pairs design, deterministic), plus the two
corners: every switch at its worst-case default (`worst`), and every switch moved off its
default (`opposite`: not "the best" everywhere; e-guma's `failures=release`, for one, lets a
key booked before an error book again).

One more factor rides along with the switches: `start`, whether the adapters start knowing
nothing (`cold`: a worker just started, the provider holds no other ticket) or after one
other booking went through cleanly on the same account (`warm`: what the adapters learn from
answers, and other tickets at the provider that a lookup must not mistake for ours).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.devtools.sandbox.switches import SWITCHES

START = "start"
START_VALUES = ("cold", "warm")

# The switches that matter for creating a booking or finding it again, per provider.
RELEVANT: dict[str, tuple[str, ...]] = {
    # passes_order only matters to a client that lists passes: no adapter call does (RemyPass
    # has no lookup by bookingId), so it stays at its default.
    "remypass": ("duplicate_status", "duplicate_message", "duplicate_returns_pass"),
    "fourvenues": (
        "sent_qr_code",
        "duplicate_qr",
        "duplicate_qr_message",
        "quantity_rule",
        "data_shape",
        "create_status",
        "lookup_paths",
        "error_key",
    ),
    "fourvenues_channels": (
        "duplicate_qr",
        "duplicate_qr_message",
        "quantity_rule",
        "list_filters",
        "create_status",
        "error_body",
    ),
    "eguma": (
        "failures",
        "replay_header",
        "error_format",
        "create_status",
        "mismatch_status",
        "in_flight_status",
        "key_on_other_endpoints",
        "orders_show_tickets",
        "orders_time_zone",
    ),
}

# The `opposite` corner: each varied switch away from its (worst-case) default.
OPPOSITE: dict[str, dict[str, Any]] = {
    "remypass": {
        "duplicate_status": 409,
        "duplicate_message": "already_exists",
        "duplicate_returns_pass": "yes",
    },
    "fourvenues": {
        "sent_qr_code": "becomes_code",
        "duplicate_qr": "refuse",
        "duplicate_qr_message": "already_exists",
        "quantity_rule": "must_match",
        "data_shape": "list",
        "create_status": 200,
        "lookup_paths": "both",
        "error_key": "message",
    },
    "fourvenues_channels": {
        "duplicate_qr": "refuse",
        "duplicate_qr_message": "already_exists",
        "quantity_rule": "must_match",
        "list_filters": "applied",
        "create_status": 200,
        "error_body": "envelope",
    },
    "eguma": {
        "failures": "release",
        "replay_header": "Idempotent-Replayed",
        "error_format": "json",
        "create_status": 200,
        "mismatch_status": 422,
        "in_flight_status": 409,
        "key_on_other_endpoints": "ignore",
        "orders_show_tickets": "yes",
        "orders_time_zone": "utc",
    },
}

# Providers whose whole product is run; the others get all pairs plus the corners.
FULL_PRODUCT = ("remypass",)


@dataclass(frozen=True)
class Combination:
    provider: str
    switches: tuple[tuple[str, Any], ...]  # in RELEVANT order
    start: str
    corner: str | None = None  # "worst" or "opposite" for the two corners

    @property
    def switch_map(self) -> dict[str, Any]:
        return dict(self.switches)

    @property
    def id(self) -> str:
        """A stable, readable name: the values in RELEVANT order, then the start."""
        return "-".join([*(str(v) for _n, v in self.switches), self.start])


def factors(provider: str) -> dict[str, tuple[Any, ...]]:
    """Every varied factor of `provider` and its values, defaults (worst case) first."""
    out: dict[str, tuple[Any, ...]] = {}
    for name in RELEVANT[provider]:
        switch = SWITCHES[provider][name]
        out[name] = (switch.default, *(v for v in switch.values if v != switch.default))
    out[START] = START_VALUES
    return out


def _key(assignment: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(assignment[n] for n in names)


def all_pairs(values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """A small list of assignments covering every pair of values of every two factors.

    Greedy, deterministic: each new row starts from the first uncovered pair and fills every
    other factor with the value that covers most uncovered pairs (ties: the earlier value)."""
    names = list(values)
    uncovered: set[tuple[str, Any, str, Any]] = {
        (a, va, b, vb) for a, b in itertools.combinations(names, 2) for va in values[a] for vb in values[b]
    }
    rows: list[dict[str, Any]] = []
    while uncovered:
        a, va, b, vb = min(uncovered, key=lambda p: (names.index(p[0]), names.index(p[2]), repr(p)))
        row: dict[str, Any] = {a: va, b: vb}
        for name in names:
            if name in row:
                continue

            def gain(value: Any, name: str = name, row: dict[str, Any] = row) -> int:
                return sum(
                    1
                    for other, ov in row.items()
                    if (name, value, other, ov) in uncovered or (other, ov, name, value) in uncovered
                )

            row[name] = max(values[name], key=lambda v: (gain(v), -list(values[name]).index(v)))
        full = {n: row[n] for n in names}
        for x, y in itertools.combinations(names, 2):
            uncovered.discard((x, full[x], y, full[y]))
        rows.append(full)
    return rows


def _combination(provider: str, row: Mapping[str, Any], corner: str | None = None) -> Combination:
    switches = tuple((name, row[name]) for name in RELEVANT[provider])
    return Combination(provider, switches, str(row[START]), corner)


def corners(provider: str) -> list[Combination]:
    worst = {name: vals[0] for name, vals in factors(provider).items()}
    opposite = {**worst, **OPPOSITE[provider]}
    return [
        _combination(provider, {**worst, START: "cold"}, "worst"),
        _combination(provider, {**opposite, START: "warm"}, "opposite"),
    ]


def full_product(provider: str) -> list[Combination]:
    """Every combination, a switch that only words a refusal that is off folded to its default."""
    f = factors(provider)
    names = list(f)
    seen: dict[str, Combination] = {}
    for values in itertools.product(*(f[n] for n in names)):
        row = dict(zip(names, values, strict=True))
        if row.get("duplicate_qr") == "accept":
            row["duplicate_qr_message"] = f["duplicate_qr_message"][0]  # unused when accepting
        combo = _combination(provider, row)
        seen.setdefault(combo.id, combo)
    return list(seen.values())


# Switches that act only on requests running at the same time or on a body changed under the
# same key: the suite's bookings are driven one request at a time with one body, so the full
# products of the slow test leave them at their defaults.
CONCURRENT_ONLY: dict[str, tuple[str, ...]] = {"eguma": ("mismatch_status", "in_flight_status")}


def sequential_product(provider: str) -> list[Combination]:
    """The full product, less the switches in CONCURRENT_ONLY (kept at their defaults)."""
    skip = CONCURRENT_ONLY.get(provider, ())
    return [
        c for c in full_product(provider) if all(c.switch_map[n] == factors(provider)[n][0] for n in skip)
    ]


def combinations(provider: str) -> list[Combination]:
    """What the suite runs for `provider`: the corners first, then the design."""
    picked = corners(provider)
    design = (
        full_product(provider)
        if provider in FULL_PRODUCT
        else [_combination(provider, row) for row in all_pairs(factors(provider))]
    )
    ids = {c.id for c in picked}
    picked += [c for c in design if c.id not in ids]
    return picked


def design_name(provider: str) -> str:
    return "full product" if provider in FULL_PRODUCT else "all pairs + the worst and opposite corners"
