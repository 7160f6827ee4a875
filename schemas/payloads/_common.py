"""Small shared field types for the provider payload schemas."""

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# A loose but useful email check: the providers validate the rest. Never echo the value back.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("not a valid email address")
    return value


def _iso_datetime(value: str) -> str:
    # Kept as the producer's own string (it is forwarded unchanged); only its shape is checked.
    if "T" not in value:
        raise ValueError("must be an ISO 8601 date-time such as 2026-03-19T19:30:00Z")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time such as 2026-03-19T19:30:00Z") from None
    return value


def _iso_date_or_datetime(value: str) -> str:
    try:
        if "T" in value:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be ISO 8601: a date (2026-03-19) or a date-time") from None
    return value


def _iso_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date in the form YYYY-MM-DD") from None
    if len(value) != 10:
        raise ValueError("must be a date in the form YYYY-MM-DD")
    return value


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
IsoDateTime = Annotated[str, AfterValidator(_iso_datetime)]
IsoDateOrDateTime = Annotated[str, AfterValidator(_iso_date_or_datetime)]
IsoDate = Annotated[str, AfterValidator(_iso_date)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]
# Finite: "Infinity" and 1e999 parse as floats, but neither httpx nor PostgreSQL json takes them.
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PayloadModel(BaseModel):
    """Strict: no silent type coercion ("2" is not a quantity), unknown fields refused so a typo
    is an error instead of a field the provider quietly ignores."""

    model_config = ConfigDict(extra="forbid", strict=True)
