"""What a re-issuance run selects (the nightly setting or the command's flags), and when a new
generation of a booking would not be safe."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.statuses import Status
from schemas.table import TicketIssuance
from worker import ledger

REDRIVABLE = frozenset({Status.FAILED, Status.NEEDS_REVIEW})
# A row whose payload retention dropped (or a deletion request erased) cannot be issued again.
PAYLOAD_GONE = "skipped_payload_removed"
PAYLOAD_GONE_REASON = (
    "the payload was removed (TICKETRELAY_PAYLOAD_RETENTION_DAYS after the booking ended, or by "
    "`ticketrelay purge`): there is nothing to send; re-import the booking from its source "
    "(`ticketrelay reissue --file`) to issue it again"
)
_DURATION = re.compile(r"^(\d+)([smhd])$")


class ReissueRefused(ValueError):
    """The run would not be safe; nothing was changed."""


@dataclass
class Selection:
    provider: str | None = None
    account: str | None = None
    statuses: list[str] = field(default_factory=lambda: [Status.FAILED.value])
    retryable_only: bool = False
    since: str | None = None  # ISO 8601 or a duration back from now: 24h, 7d
    until: str | None = None
    limit: int | None = None
    new_generation: bool = False

    @classmethod
    def from_spec(cls, spec: str) -> Selection:
        """`status=failed retryable=true since=24h provider=eguma` (the nightly setting)."""
        sel = cls()
        for part in spec.split():
            name, _, value = part.partition("=")
            if name == "status":
                sel.statuses = value.split(",")
            elif name == "retryable":
                sel.retryable_only = value.lower() in ("1", "true", "yes")
            elif name in ("provider", "account", "since", "until"):
                setattr(sel, name, value)
            elif name == "limit":
                sel.limit = int(value)
            else:
                raise ValueError(f"unknown selection key {name!r} in {spec!r}")
        sel.validate()
        return sel

    def validate(self) -> None:
        bad = set(self.statuses) - {s.value for s in Status}
        if bad:
            raise ValueError(f"unknown status {', '.join(sorted(bad))}")
        for bound in (self.since, self.until):
            if bound is not None:
                _when(bound)

    def row_filter(self, run_id: str) -> ledger.RowFilter:
        """The ledger's filter for this selection, leaving out what run `run_id` drove."""
        return ledger.RowFilter(
            statuses=tuple(self.statuses),
            provider=self.provider or None,
            account=self.account or None,
            retryable_only=self.retryable_only,
            created_from=_when(self.since) if self.since else None,
            created_before=_when(self.until) if self.until else None,
            not_driven_by=run_id,
        )


def _when(value: str) -> datetime:
    m = _DURATION.match(value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return ledger.utcnow() - timedelta(**{unit: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither ISO 8601 nor a duration like 24h or 7d") from None
    return ledger.as_utc(parsed) or parsed


def new_generation_refusal(row: TicketIssuance) -> str | None:
    """Why a new generation of this row would not be safe, or None."""
    if row.provider == "remypass":
        return (
            "remypass: bookingId is unique per account at RemyPass; a new generation would be "
            "answered 'duplicate' (and reconciled as the old ticket), never a new ticket"
        )
    if row.provider in ("fourvenues", "fourvenues_channels"):
        tickets = (row.payload or {}).get("tickets") or []
        if any(isinstance(t, dict) and t.get("qr_code") for t in tickets):
            return (
                f"{row.provider}: the producer set qr_codes, so a new generation would send the "
                "same codes again"
            )
    if row.payload is None:
        if row.status == Status.REJECTED:
            return "the message was rejected: there is no valid payload to issue"
        return PAYLOAD_GONE_REASON
    return None
