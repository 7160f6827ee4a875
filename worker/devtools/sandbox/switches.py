"""Switches: every behaviour the providers' documentation leaves open, one setting each.

The default of every switch is the worst case for a client that must never issue a ticket
twice (or, where the choice does not touch duplicates, the reading the documentation leans
to). README.md beside this file has the same table, with the doc statement behind each
switch; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Switch:
    name: str
    values: tuple[Any, ...]
    default: Any
    why: str  # which doc statement leaves it open

    def __post_init__(self) -> None:
        assert self.default in self.values, self.name


def _table(*switches: Switch) -> dict[str, Switch]:
    return {s.name: s for s in switches}


_DUP_WORDING = ("must_be_unique", "already_exists", "duplicate")

# Both Fourvenues APIs take a client-chosen qr_code and document neither way of treating a
# repeated one; the two simulators read the same pair of switches.
_DUPLICATE_QR = (
    Switch(
        "duplicate_qr",
        ("accept", "refuse"),
        "accept",
        "nothing says whether a repeated qr_code is refused",
    ),
    Switch(
        "duplicate_qr_message",
        _DUP_WORDING,
        "must_be_unique",
        "no error text for a repeated qr_code is documented (used when duplicate_qr=refuse)",
    ),
)

SWITCHES: dict[str, dict[str, Switch]] = {
    "remypass": _table(
        Switch(
            "duplicate_status",
            (400, 409),
            400,
            "duplicate bookingIds are 'rejected'; the responses table lists only 400 for rejections",
        ),
        Switch(
            "duplicate_message",
            _DUP_WORDING,
            "must_be_unique",
            "the body of the duplicate rejection is not documented",
        ),
        Switch(
            "duplicate_returns_pass",
            ("no", "yes"),
            "no",
            "whether the duplicate rejection carries the existing pass is not documented",
        ),
        Switch(
            "passes_order",
            ("oldest_first", "newest_first"),
            "oldest_first",
            "GET /passes documents no sort order",
        ),
    ),
    "fourvenues": _table(
        Switch(
            "sent_qr_code",
            ("ignored", "becomes_code"),
            "ignored",
            "the docs never say a sent qr_code becomes the ticket's code (their example sends "
            "QRCODE123ABC and answers code P6J21FF2S)",
        ),
        *_DUPLICATE_QR,
        Switch(
            "quantity_rule",
            ("quantity", "tickets", "must_match"),
            "quantity",
            "the example sends quantity 2 with one ticket object; how quantity relates to "
            "len(tickets) is not stated",
        ),
        Switch(
            "data_shape",
            ("object", "list", "list_when_many"),
            "object",
            "the example answers data as one object; nothing says what several tickets give",
        ),
        Switch("create_status", (200, 201), 201, "the success status of POST /tickets/ is not shown"),
        Switch(
            "lookup_paths",
            ("by-code", "code", "both"),
            "by-code",
            "the API reference writes /tickets/by-code/{code}, the use-case page /tickets/code/{code}",
        ),
        Switch(
            "error_key",
            ("error", "message"),
            "error",
            "no error section; public reports show {'error': ...}, clients also read 'message'",
        ),
        Switch(
            "refund_status",
            ("unchanged", "cancelled"),
            "unchanged",
            "whether POST /tickets/refund/{id} also cancels the ticket is not documented",
        ),
        Switch(
            "auth_v1",
            ("accepted", "refused"),
            "accepted",
            "whether auth v1 (integration_id + secret) is deprecated is not documented",
        ),
    ),
    "fourvenues_channels": _table(
        *_DUPLICATE_QR,
        Switch(
            "quantity_rule",
            ("quantity", "tickets", "must_match"),
            "quantity",
            "how quantity relates to len(tickets) is not stated",
        ),
        Switch(
            "list_filters",
            ("ignored", "applied"),
            "ignored",
            "GET /tickets lists tickets 'given certain query parameters' whose names are not documented",
        ),
        Switch("create_status", (200, 201), 201, "the success status of POST /tickets is not shown"),
        Switch(
            "error_body",
            ("envelope", "boom"),
            "envelope",
            "the error body is not documented; clients read 'message' ({success:false, message} "
            "or {statusCode, error, message})",
        ),
    ),
    "eguma": _table(
        Switch(
            "mismatch_status",
            (400, 409, 422),
            422,
            "same key + different body is 'refused'; the status was stripped from the stored page",
        ),
        Switch(
            "in_flight_status",
            (409, 422, 429),
            409,
            "same key while the first request runs is 'refused'; status stripped",
        ),
        Switch(
            "failures",
            ("replay", "release"),
            "replay",
            "whether failed first answers (4xx/5xx) are stored and replayed is not stated",
        ),
        Switch(
            "replay_header",
            ("Idempotent-Replayed", "Idempotency-Replayed", "X-Idempotent-Replayed"),
            "Idempotent-Replayed",
            "replayed answers carry a marker header whose name was stripped",
        ),
        Switch(
            "error_format",
            ("text", "json"),
            "text",
            "the general docs say plain-text error bodies; the ticketing pages name codes "
            "(validation_error, not_found)",
        ),
        Switch("create_status", (200, 201), 201, "the success status of booking.json is not stated"),
        Switch(
            "key_on_other_endpoints",
            ("reject", "ignore"),
            "reject",
            "the key 'must not be sent' to endpoints that do not document it; the answer is not stated",
        ),
        Switch(
            "reservation_error_status",
            (400, 404, 409, 410, 422),
            400,
            "booking with an expired, unknown or used reservation_id: answer not documented",
        ),
        Switch(
            "cancel_refused_status",
            (400, 409, 422),
            400,
            "cancel-booking refused (already cancelled, started, checked in): status not documented",
        ),
        Switch(
            "sold_out_status",
            (400, 409, 422),
            409,
            "booking more than the slot has left: answer not documented",
        ),
        Switch(
            "closing_enforced",
            ("no", "yes"),
            "no",
            "availabilities hide slots past closing_at; booking one anyway is not documented",
        ),
        Switch(
            "orders_show_tickets",
            ("no", "yes"),
            "no",
            "the order_lines fields of orders.json are not listed (ticket numbers may be absent)",
        ),
        Switch(
            "orders_time_zone",
            ("local", "utc"),
            "local",
            "orders.json timestamps (2019-06-04T23:15:14) carry no zone",
        ),
    ),
}


class SwitchBoard:
    """The current position of every switch, per provider. `start` (provider -> switches)
    replaces the defaults for this board: reset() comes back to it."""

    def __init__(self, start: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._start: dict[str, dict[str, Any]] = {}
        self.reset()
        for provider, switches in (start or {}).items():
            self.set(provider, **switches)
        self._start = self.as_dict()

    def reset(self, provider: str = "*") -> None:
        for name in self._providers(provider):
            defaults = {s.name: s.default for s in SWITCHES[name].values()}
            self._values[name] = {**defaults, **self._start.get(name, {})}

    def get(self, provider: str) -> dict[str, Any]:
        return dict(self._values[provider])

    def set(self, provider: str, **switches: Any) -> None:
        """Validate everything first, then apply: a bad call changes nothing."""
        providers = self._providers(provider)
        changes: dict[str, dict[str, Any]] = {p: {} for p in providers}
        for key, value in switches.items():
            owners = [p for p in providers if key in SWITCHES[p]]
            if not owners:
                known = sorted({n for p in providers for n in SWITCHES[p]})
                raise ValueError(f"unknown switch {key!r} for {provider}; known: {', '.join(known)}")
            for p in owners:
                switch = SWITCHES[p][key]
                if value not in switch.values or isinstance(value, bool):
                    allowed = ", ".join(repr(v) for v in switch.values)
                    raise ValueError(f"switch {p}.{key} takes one of {allowed}, not {value!r}")
                changes[p][key] = value
        for p, values in changes.items():
            self._values[p].update(values)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {p: dict(v) for p, v in self._values.items()}

    @staticmethod
    def _providers(provider: str) -> tuple[str, ...]:
        if provider == "*":
            return tuple(SWITCHES)
        if provider not in SWITCHES:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(SWITCHES)}")
        return (provider,)


def parse_switch(text: str) -> tuple[str, str, Any]:
    """ "fourvenues.sent_qr_code=becomes_code" -> (provider, name, value); status codes as ints."""
    target, sep, raw = text.partition("=")
    provider, dot, name = target.partition(".")
    if not sep or not dot:
        raise ValueError(f"expected PROVIDER.SWITCH=VALUE, not {text!r}")
    value: Any = int(raw) if raw.isdigit() else raw
    return provider, name, value
