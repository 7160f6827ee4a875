"""The result message appended to the callback stream (CONTRACT.md section 2)."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Ticket(BaseModel):
    """A normalised ticket: `code` is what goes into the QR code."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: str | None = None
    code: str | None = None
    category: str | None = None
    seat: str | None = None


class ResultError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    http_status: int | None = None
    retryable: bool = False


class ResultMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    message_id: str
    idempotency_key: str
    provider: str
    account: str
    generation: int
    status: Literal["issued", "failed", "rejected", "needs_review"]
    attempts: int
    provider_reference: str | None = None
    tickets: list[Ticket] = []
    error: ResultError | None = None
    metadata: dict[str, str] = {}
    completed_at: datetime
    # True when the account is the built-in sandbox (or an account marked `sandbox = true`):
    # simulated tickets, nothing exists at a real provider.
    sandbox: bool = False
