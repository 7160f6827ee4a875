"""The result message appended to the callback stream (CONTRACT.md section 2)."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    """What ticketrelay appends to the reply_to stream when a message reaches a final status.
    Delivery is at least once: keep, per idempotency_key, the result with the highest revision."""

    model_config = ConfigDict(extra="forbid", title="ticketrelay result message")

    version: Literal[1] = 1
    message_id: str
    idempotency_key: str
    provider: str
    account: str
    generation: int
    status: Literal["issued", "failed", "rejected", "needs_review", "cancelled"]
    attempts: int
    provider_reference: str | None = None
    tickets: list[Ticket] = []
    error: ResultError | None = None
    metadata: dict[str, str] = {}
    completed_at: datetime
    # 1.1: defaults that describe every 1.0 result, so a result without them stays valid.
    revision: int = Field(default=1, ge=1, description="Raised by each correction; keep the highest per key.")
    operation: Literal["issue", "cancel"] = "issue"
    cancels: str | None = Field(default=None, description="For a cancel: the cancelled booking's message_id.")
    # The account is the built-in sandbox (or one marked `sandbox = true`): simulated tickets,
    # nothing exists at a real provider.
    sandbox: bool = Field(default=False, description="True: issued against a simulator, not a real provider.")
