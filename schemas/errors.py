"""Turn a pydantic ValidationError into one clear line that never repeats the input values:
the values may be a customer's name, email or document number."""

from pydantic import ValidationError


def describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p != "")
        where = f"{prefix}{'.' if prefix and loc else ''}{loc}" or prefix or "message"
        msg = err["msg"]
        # pydantic's "Value error, ..." prefix is noise for a producer reading the reason.
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts[:10]) + ("; ..." if len(parts) > 10 else "")
