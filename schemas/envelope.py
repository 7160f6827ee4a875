"""The booking envelope a producer appends to `ticketrelay:bookings` (CONTRACT.md section 1)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ProviderName = Literal["remypass", "fourvenues", "fourvenues_channels", "eguma"]
PROVIDERS: tuple[str, ...] = ("remypass", "fourvenues", "fourvenues_channels", "eguma")
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ACCOUNT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# A results stream key: it becomes a Redis key and a SQL value, so only a plain charset (the
# configured prefix is checked by the worker, which knows it).
REPLY_TO_PATTERN = r"^[A-Za-z0-9:._-]{1,256}$"
MAX_REPLY_TO = 256
MAX_METADATA_KEYS = 32


class Envelope(BaseModel):
    """One booking request. `payload` is the provider's own body; it is checked against the
    provider's schema separately (schemas.payloads), so that the error names the provider."""

    model_config = ConfigDict(extra="forbid", title="ticketrelay booking envelope")

    version: Literal[1] = Field(1, description="Contract version.")
    message_id: str = Field(
        pattern=MESSAGE_ID_PATTERN,
        description="The producer's unique id for this booking request; the dedup key.",
    )
    provider: ProviderName = Field(description="Which provider API to call.")
    account: str = Field(
        "default",
        pattern=ACCOUNT_PATTERN,
        description="Which configured credential set of that provider to use.",
    )
    payload: dict[str, Any] | None = Field(
        None,
        description=(
            "The provider's own request body, exactly as that provider documents it (required "
            "for `issue`). For `cancel`: optional provider-specific options (e.g. `amount`)."
        ),
    )
    reply_to: str | None = Field(
        None,
        pattern=REPLY_TO_PATTERN,
        description=(
            "Results stream key: the configured results prefix (default `ticketrelay:results`), "
            "then only A-Za-z0-9 and `:._-`, at most 256 characters in all."
        ),
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Echoed back unchanged in the result; at most 32 keys.",
    )

    # 1.1 cancellations (CONTRACT.md 1, "Cancellations").
    operation: Literal["issue", "cancel"] = Field("issue", description="What to do.")
    cancels: str | None = Field(
        None,
        pattern=MESSAGE_ID_PATTERN,
        description="For `cancel`: the message_id of the booking to cancel (same provider and account).",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_an_int(cls, value: object) -> object:
        # Literal[1] alone would take True and 1.0 (both equal 1).
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("must be the integer 1")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys allowed, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _operation_fields(self) -> "Envelope":
        if self.operation == "issue":
            if self.payload is None:
                raise ValueError("payload is required for operation issue")
            if self.cancels is not None:
                raise ValueError("cancels is only for operation cancel")
        elif self.cancels is None:
            raise ValueError("cancels (the booking's message_id) is required for operation cancel")
        elif self.cancels == self.message_id:
            raise ValueError("a cancel needs a message_id of its own, not the cancelled booking's")
        return self


# --- 1.1 cancellations -------------------------------------------------------------------


class CancelOptions(BaseModel):
    """A cancel's optional `payload`. Only the Fourvenues APIs take options: their void is a
    refund, and `amount` is what each ticket is refunded (absent: the whole price)."""

    model_config = ConfigDict(extra="forbid", title="ticketrelay cancel options")

    amount: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Refund per ticket (Fourvenues)."
    )


# Which providers take which cancel options: the others take none.
CANCEL_OPTION_FIELDS: dict[str, frozenset[str]] = {
    "remypass": frozenset(),
    "fourvenues": frozenset({"amount"}),
    "fourvenues_channels": frozenset({"amount"}),
    "eguma": frozenset(),
}
