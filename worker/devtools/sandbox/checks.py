"""Plain request checks for the simulators, written from the providers' pages.

Each simulator checks only what its documentation states: a documented required field, a
documented type, enum or format. Where the docs are silent, the simulators accept. A failed
check raises Invalid with a message naming the field, which each simulator wraps in its
provider's error body.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from worker.devtools.sandbox.wire import SandboxRequest


class Invalid(Exception):
    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code  # e-guma's symbolic code (validation_error, not_found ...)


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def type_ok(value: Any, kind: str) -> bool:
    if kind in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def field(obj: dict[str, Any], name: str, kind: str, where: str = "", required: bool = False) -> Any:
    """obj[name] checked against `kind`; None when absent (or null) and not required."""
    label = f"{where}{name}"
    value = obj.get(name)
    if value is None:
        if required:
            raise Invalid(f'"{label}" is required')
        return None
    if not type_ok(value, kind):
        raise Invalid(f'"{label}" must be {"an" if kind[0] in "aeio" else "a"} {kind}')
    return value


def body_object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Invalid("the request body must be a JSON object")
    return raw


def json_body(
    request: SandboxRequest, not_json: str = "Invalid JSON body", code: str | None = None
) -> dict[str, Any]:
    """The request's body as a JSON object; Invalid (`not_json`, e-guma's `code`) when it is not
    JSON, and Invalid naming the shape when it is JSON but not an object."""
    try:
        return body_object(request.json())
    except ValueError:
        raise Invalid(not_json, code=code) from None


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_date(value: str) -> bool:
    """YYYY-MM-DD and a real day."""
    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_datetime(value: str) -> datetime | None:
    """An ISO 8601 date-time (time part required, zone optional), else None."""
    if not _DATETIME.match(value):
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    # Python 3.11 reads at most 6 fractional digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
