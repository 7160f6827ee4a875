"""Data shapes only: no I/O and no imports of the rest of ticketrelay.

The names exported here are the public contract of ../shared/CONTRACT.md in code form.
"""

from schemas.envelope import (
    MESSAGE_ID_PATTERN,
    PROVIDERS,
    Envelope,
    ProviderName,
)
from schemas.result import ResultError, ResultMessage, Ticket
from schemas.statuses import FINAL_STATUSES, Status

__all__ = [
    "FINAL_STATUSES",
    "MESSAGE_ID_PATTERN",
    "PROVIDERS",
    "Envelope",
    "ProviderName",
    "ResultError",
    "ResultMessage",
    "Status",
    "Ticket",
]
