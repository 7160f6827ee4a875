"""The `ticket_issuances` table: one row per idempotency key, the source of truth.

Columns named in CONTRACT.md section 2 are public; the ones below the marker are internal
bookkeeping of the state machine (lease, backoff, payload for re-drives).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel


class TicketIssuance(SQLModel, table=True):
    __tablename__ = "ticket_issuances"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_ticket_issuances_idempotency_key"),
        Index("ix_ticket_issuances_status_updated", "status", "updated_at"),
        Index("ix_ticket_issuances_message", "provider", "account", "message_id"),
        Index("ix_ticket_issuances_cancels", "provider", "account", "cancels"),
        # "Is this provider order another row's?" (a lookup after an answer in doubt).
        Index("ix_ticket_issuances_reference", "provider", "account", "provider_reference"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=36, nullable=False)
    message_id: str = Field(max_length=128, nullable=False)
    provider: str = Field(max_length=32, nullable=False)
    account: str = Field(max_length=64, nullable=False)
    generation: int = Field(default=0, nullable=False)
    status: str = Field(max_length=16, nullable=False)
    attempts: int = Field(default=0, nullable=False)
    provider_reference: str | None = Field(default=None, max_length=256)
    tickets: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error_type: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1024)
    http_status: int | None = None
    created_at: datetime = Field(nullable=False)
    updated_at: datetime = Field(nullable=False)
    completed_at: datetime | None = None
    callback_sent_at: datetime | None = None

    # --- internal ---
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    payload_sha256: str = Field(max_length=64, nullable=False)
    reply_to: str = Field(max_length=256, nullable=False)
    message_metadata: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error_retryable: bool | None = None
    # An earlier attempt may have reached the provider and created tickets.
    in_doubt: bool = Field(default=False, nullable=False)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    # The bulk re-issuance run that last re-drove this row, and the attempts made before it:
    # each drive gets the account's full attempt budget, `attempts` keeps counting every call.
    reissue_run: str | None = Field(default=None, max_length=64, index=True)
    attempts_base: int = Field(default=0, nullable=False, sa_column_kwargs={"server_default": "0"})
    # When the first provider call of this key was made (set by the claim that counts it):
    # e-guma forgets an Idempotency-Key 72 hours after its first use.
    first_attempt_at: datetime | None = None
    # Fourvenues: the qr_code sent for each ticket the producer sent without one (None where
    # the producer gave one), random and stored by that same first claim, so every attempt and
    # every worker sends exactly these (worker/providers/codes.py).
    qr_codes: list[str | None] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    # Contract 1.1: 0 until the key's first final result, then raised by every final result
    # (the first one, and each correction: an operator's resolve, a re-drive that ends final).
    revision: int = Field(default=0, nullable=False, sa_column_kwargs={"server_default": "0"})
    # Who settled a needs_review (or failed) booking by hand, when, and why (ticketrelay resolve).
    resolved_by: str | None = Field(default=None, max_length=64)
    resolved_at: datetime | None = None
    resolution: str | None = Field(default=None, max_length=1024)
    # When this key was last re-driven (ticketrelay retry, a bulk re-issuance run): the give-up
    # time limit counts from here, not from created_at.
    redriven_at: datetime | None = None

    # --- 1.1 cancellations (migration 0006) ---
    # `issue` or `cancel`; a cancel names the cancelled booking's message_id in `cancels`.
    operation: str = Field(
        default="issue", max_length=8, nullable=False, sa_column_kwargs={"server_default": "issue"}
    )
    cancels: str | None = Field(default=None, max_length=128)
    # On a booking: the key of the one cancel that may call the provider's void (set once,
    # compare-and-set), so repeated cancels make one call.
    cancel_key: str | None = Field(default=None, max_length=36)


class ReissueRun(SQLModel, table=True):
    """One bulk re-issuance: its selection (to resume it) and, once finished, its report."""

    __tablename__ = "reissue_runs"

    run_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(nullable=False)
    updated_at: datetime = Field(nullable=False)
    finished_at: datetime | None = None
    state: str = Field(max_length=16, nullable=False)  # running, stopped, done
    selection: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    total: int = Field(default=0, nullable=False)
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class TicketAttempt(SQLModel, table=True):
    """One provider call of a key (or an operator's settlement of it), written in the same
    transaction as the ledger step that records its outcome. Deleted with its issuance, and by
    the sweeper once older than the retention setting (attempts_retention_s)."""

    __tablename__ = "ticket_attempts"
    __table_args__ = (
        Index("ix_ticket_attempts_key", "idempotency_key", "attempt"),
        Index("ix_ticket_attempts_recorded", "recorded_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(
        sa_column=Column(
            String(36),
            ForeignKey("ticket_issuances.idempotency_key", ondelete="CASCADE"),
            nullable=False,
        )
    )
    attempt: int = Field(nullable=False)  # the row's attempts after this call (0: no call)
    started_at: datetime = Field(nullable=False)
    recorded_at: datetime = Field(nullable=False)
    duration_ms: float | None = None
    worker: str = Field(max_length=128, nullable=False)
    # issued, failed, needs_review, retry, lease_lost; resolved_issued, resolved_failed, redrive
    outcome: str = Field(max_length=32, nullable=False)
    http_status: int | None = None
    error_type: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1024)  # scrubbed
    in_doubt: bool = Field(default=False, nullable=False)
    probe: bool = Field(default=False, nullable=False)


# --- signed HTTP callbacks (worker/webhooks) ---


class WebhookOutbox(SQLModel, table=True):
    """One result to POST to one callback URL, kept until the receiver answers 2xx.

    Written in the transaction that marks the result published, so no result is lost between
    the two; `body` holds the exact bytes that are signed and sent, and `webhook_id` stays the
    same on every retry and replay of that result revision (receivers deduplicate on it).
    Secrets are never stored here: they are read from the accounts file at send time."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "revision", "url", name="uq_webhook_outbox_result_url"),
        Index("ix_webhook_outbox_due", "delivered_at", "dead_at", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=36, nullable=False)
    revision: int = Field(nullable=False)
    provider: str = Field(max_length=32, nullable=False)
    account: str = Field(max_length=64, nullable=False)
    url: str = Field(max_length=2048, nullable=False)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    webhook_id: str = Field(max_length=64, nullable=False)
    attempts: int = Field(default=0, nullable=False)
    next_attempt_at: datetime = Field(nullable=False)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(nullable=False)
    # Set by an operator's replay: the give-up window starts again from here.
    replayed_at: datetime | None = None
    dead_at: datetime | None = None
