"""Small shared field types for the provider payload schemas.

A rule here is one a provider documents. Where a provider's docs are silent the schemas accept
and the provider answers; the exceptions are ticketrelay's own bounds, named where they are set.
"""

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


# ISO 8601 extended form, local time: a date, or a date with hh:mm, hh:mm:ss and maybe a fraction
# of a second (.NET answers carry seven digits). No zone: e-guma's slots are the venue's time.
LOCAL_DATE_OR_DATETIME = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}([.,]\d+)?)?)?$"
_LOCAL_HINT = "must be ISO 8601 local time without a zone, e.g. 2026-03-19T10:00:00 (a day slot: 2026-03-19)"
_LOCAL = re.compile(LOCAL_DATE_OR_DATETIME)


def _local_date_or_datetime(value: str) -> str:
    # The pattern fixes the shape; the calendar and the clock are checked here (no 2026-02-30,
    # no 25:00), with a message that says what is wanted instead of pydantic's pattern text.
    if not _LOCAL.fullmatch(value):
        raise ValueError(_LOCAL_HINT)
    day, _, clock = value.partition("T")
    try:
        date.fromisoformat(day)
        if clock:
            hh, mm, *rest = clock.replace(",", ".").split(":")
            seconds = float(rest[0]) if rest else 0.0
            if not (0 <= int(hh) <= 23 and 0 <= int(mm) <= 59 and 0 <= seconds < 60):
                raise ValueError(_LOCAL_HINT)
    except ValueError:
        raise ValueError(_LOCAL_HINT) from None
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
# The pattern is for the shipped JSON Schema (producers in other languages); the validator
# judges, so that the error message explains the format.
LocalDateOrDateTime = Annotated[
    str,
    Field(json_schema_extra={"pattern": LOCAL_DATE_OR_DATETIME}, description=_LOCAL_HINT),
    AfterValidator(_local_date_or_datetime),
]
IsoDate = Annotated[str, AfterValidator(_iso_date)]
# Length and count caps in these schemas (512 characters, 500 tickets, 100 items, quantities) are
# ticketrelay's own bounds on one message, not a provider's rules.
NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]
# An optional text the docs set no rule on: an empty string (a blank form field) is the
# provider's to judge.
Text = Annotated[str, Field(max_length=512)]
# The docs set no range on prices. Finite only: "Infinity" and 1e999 parse as floats, but
# neither JSON, httpx nor PostgreSQL json can carry them.
Money = Annotated[float, Field(allow_inf_nan=False)]


class PayloadModel(BaseModel):
    """Strict: no silent type coercion ("2" is not a quantity), unknown fields refused so a typo
    is an error instead of a field the provider quietly ignores."""

    model_config = ConfigDict(extra="forbid", strict=True)
