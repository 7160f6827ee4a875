"""Hypothesis strategies shared by the fuzz tests (tests/unit/test_fuzz_validation.py and
tests/integration/test_fuzz_intake.py): valid envelopes carrying distinctive personal data, and
mutations of them, raw garbage and entries without a `message` field."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hypothesis import strategies as st

from tests.helpers import envelope

PROVIDERS = ("remypass", "fourvenues", "fourvenues_channels", "eguma")

# Distinctive personal data: none of these may ever appear in a rejection reason.
PII_NAME = "Jane Secretcustomer"
PII_FIRST = "Janexq"
PII_LAST = "Secretcustomer"
PII_EMAIL = "jane.secret-customer@example.com"
PII_PHONE = "+34600123987"
PII_DOC = "X9876543Z-SECRETDOC"
PII_MARKERS = ("Secretcustomer", "Janexq", "secret-customer@", "600123987", "SECRETDOC")


def pii_envelope(provider: str, message_id: str) -> dict[str, Any]:
    """A valid envelope whose every piece of personal data is a distinctive marker."""
    env = envelope(provider, message_id)
    p = env["payload"]
    if provider == "remypass":
        p["customer"] = {"name": PII_NAME, "email": PII_EMAIL}
    elif provider == "eguma":
        p["customer"] = {"first_name": PII_FIRST, "last_name": PII_LAST, "email": PII_EMAIL}
    else:
        for t in p["tickets"]:
            t.update(full_name=PII_NAME, email=PII_EMAIL, phone=PII_PHONE)
            t.update(personal_document_type="passport", personal_document_number=PII_DOC)
    env["metadata"] = {"source": "fuzz", "booking_ref": "B-1", "note": "n"}
    env["reply_to"] = "ticketrelay:results:fuzz"
    return env


# --- raw tokens: JSON text Python's json.dumps cannot (or will not) write -------------------


class Raw(str):
    """A placeholder replaced by raw JSON text when encoding (huge numbers, NaN, 1e999 ...)."""


RAW_TOKENS = [
    "9" * 5000,  # more digits than Python converts by default (4300)
    "-" + "1" * 4301,
    "1" * 4000,
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e-400",
    "-0",
    "0.0000000000000000000000001",
    "123456789012345678901234567890",
]


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON text of `value` as UTF-8 bytes. Lone surrogates are written as escapes (ascii_only)
    or as their raw 3-byte UTF-8 form (invalid UTF-8 that json.loads still reads)."""
    raws: dict[str, str] = {}

    def default(obj: Any) -> Any:
        raise TypeError(type(obj).__name__)

    def swap(obj: Any) -> Any:
        if isinstance(obj, Raw):
            marker = f"@@raw{len(raws)}@@"
            raws[json.dumps(marker)] = str(obj)
            return marker
        if isinstance(obj, dict):
            return {k: swap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [swap(v) for v in obj]
        return obj

    text = json.dumps(swap(value), ensure_ascii=ascii_only, default=default)
    for marker, raw in raws.items():
        text = text.replace(marker, raw)
    return text.encode("utf-8", "surrogatepass")


# --- strategies -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ODD = [
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\u200f",
    "\ufeff",
    "\x00",
    "\x07",
    "\x1b[31m",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u2028",
    "\u3000",
    "  ",
    "🎟️",
    "👩🏽‍🚀",
    "שלום",
    "مرحبا",
    "e\u0301",
    "\U0001d54f",  # mathematical double-struck X
    "\\",
    '"',
    "<script>",
    "%s{0}",
    "\ud800",  # lone surrogates: not Unicode text at all
    "\udfff",
    "a\x00b",  # NUL: PostgreSQL text refuses it, a Redis key or a C string cuts at it
    "\x00\x00",
    "\x7f",
    "\x85",  # C1 "next line"
    "\x1f",
    "\x08",
]
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
odd_text = st.one_of(
    st.sampled_from(ODD), st.text(min_size=1, max_size=10), st.text(surrogates, min_size=1, max_size=2)
)
odd_numbers = st.one_of(
    st.sampled_from([0, -1, -1000, 10**18, 0.5, -0.0, True, "2"]),
    st.integers(-5, 5),
    st.floats(),
    st.sampled_from(RAW_TOKENS).map(Raw),
)
BAD_DATES = [
    "",
    "2026-02-30",
    "2026-13-01",
    "2026-12-25 19:30",
    "25/12/2026",
    "2026-12-25T25:00:00Z",
    "2026-12-25T19:30:00+25:00",
    "yesterday",
    "1900-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "20261225",
    "2026-W52",
    "2026-12-25T19:30:00Z\n",
]
EXTRA_KEYS = ["extra", "x_extra", "Quantity", "customer ", "__proto__", "qr_code", "message_id", "id"]
# Keys no schema knows, carrying personal data and characters no SQL text column, Redis key or
# log line should see: a rejection must name them by position, never by their text.
ODD_KEYS = [
    "Secretcustomer\x00",
    "\x00",
    "a\x00b",
    "\ud800",
    "Janexq\udfff",
    "\x1b[31mSECRETDOC",
    "\u202e600123987",
    "k\n\rk",
    "",
]

Draw = Callable[[st.SearchStrategy[Any]], Any]
Slot = tuple[Any, Any]  # (parent container, key or index)


def slots(node: Any) -> Iterator[Slot]:
    """Every (parent, key) of the tree below `node`, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in list(items):
        yield node, key
        yield from slots(child)


def pick(draw: Draw, env: dict[str, Any], want: Callable[[Any], bool]) -> Slot | None:
    found = [(p, k) for p, k in slots(env) if want(p[k])]
    return draw(st.sampled_from(found)) if found else None


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def op_drop_key(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, lambda v: True)
    if s is not None and isinstance(s[0], dict):
        del s[0][s[1]]


def op_change_type(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, lambda v: True)
    if s is not None:
        s[0][s[1]] = draw(json_values)


def op_odd_chars(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, is_str)
    if s is not None:
        value = s[0][s[1]]
        at = draw(st.integers(0, len(value)))
        s[0][s[1]] = value[:at] + draw(odd_text) + value[at:]


def op_huge_string(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, is_str)
    if s is not None:
        char = draw(st.sampled_from(["x", "é", "🎟", " "]))
        s[0][s[1]] = char * draw(st.sampled_from([513, 5_000, 70_000, 300_000]))


def op_deep_nesting(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, lambda v: True)
    if s is not None:
        value: Any = draw(json_scalars)
        for _ in range(draw(st.integers(2, 150))):  # deeper: deep_text (no Python recursion)
            value = [value] if draw(st.booleans()) else {"a": value}
        s[0][s[1]] = value


def op_bad_number(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, is_number)
    if s is not None:
        s[0][s[1]] = draw(odd_numbers)


def op_wrong_date(draw: Draw, env: dict[str, Any]) -> None:
    s = pick(draw, env, lambda v: is_str(v) and bool(re.match(r"\d{4}-\d\d-\d\d", v)))
    if s is not None:
        s[0][s[1]] = draw(st.one_of(st.sampled_from(BAD_DATES), st.text(max_size=25)))


def op_extra_field(draw: Draw, env: dict[str, Any]) -> None:
    dicts = [env] + [p[k] for p, k in slots(env) if isinstance(p[k], dict)]
    target = draw(st.sampled_from(dicts))
    target[draw(st.sampled_from(EXTRA_KEYS))] = draw(json_values)


def op_odd_key(draw: Draw, env: dict[str, Any]) -> None:
    """Rename a key of any object (the envelope, the payload, metadata, a nested object), or add
    one, so that its name carries NUL, surrogates, control characters or personal data."""
    dicts = [env] + [p[k] for p, k in slots(env) if isinstance(p[k], dict)]
    target = draw(st.sampled_from(dicts))
    odd = draw(st.one_of(st.sampled_from(ODD_KEYS), odd_text))
    keys = list(target)
    if keys and draw(st.booleans()):
        old = draw(st.sampled_from(keys))
        at = draw(st.integers(0, len(old)))
        target[old[:at] + odd + old[at:]] = target.pop(old)
    else:
        target[odd] = draw(st.one_of(json_values, odd_text))


def op_provider_rule(draw: Draw, env: dict[str, Any]) -> None:
    """Break (or stretch) a provider's documented rule."""
    p = env.get("payload")
    if not isinstance(p, dict):
        return
    if isinstance(p.get("items"), list) and p["items"]:  # e-guma
        choice = draw(st.sampled_from(["dup_category", "quantity"]))
        if choice == "dup_category":
            p["items"].append(copy.deepcopy(p["items"][0]))
        elif isinstance(p["items"][0], dict):
            p["items"][0]["quantity"] = draw(st.sampled_from([0, -1, 1001, 2]))
    elif isinstance(p.get("tickets"), list) and p["tickets"]:  # both Fourvenues APIs
        choice = draw(st.sampled_from(["mismatch", "both_ids", "prices", "dup_qr", "negative_price"]))
        tickets = p["tickets"]
        if choice == "mismatch":
            p["quantity"] = draw(st.sampled_from([0, -1, len(tickets) + 1, max(len(tickets) - 1, 0)]))
        elif choice == "both_ids":
            p["channel_id"], p["referral_id"] = "chnl_1", "ref_1"
        elif choice == "prices":
            first = tickets[0] if isinstance(tickets[0], dict) else {}  # an earlier op may have
            tickets.append({**copy.deepcopy(first), "price_id": "price_other"})  # changed it
            p["quantity"] = len(tickets)
        elif choice == "dup_qr":
            for t in tickets:
                if isinstance(t, dict):
                    t["qr_code"] = "SAMECODE"
        elif isinstance(tickets[0], dict):
            tickets[0]["total_price"] = -1
    elif "startTime" in p:  # RemyPass
        p["startTime"] = draw(st.sampled_from(BAD_DATES))


def op_envelope_field(draw: Draw, env: dict[str, Any]) -> None:
    field, values = draw(
        st.sampled_from(
            [
                (
                    "message_id",
                    ["", "x" * 129, "has space", "ünï", "m\n", "m-1\n", 7, None, "m\x00", "m\ud800"],
                ),
                ("provider", ["ticketmaster", "EGUMA", "", 1, None]),
                ("account", ["nobody", "", "a b", "default\n", 5]),
                (
                    "reply_to",
                    [
                        "elsewhere",
                        "",
                        "ticketrelay:results:" + "x" * 300,
                        "ticketrelay:results:" + "x" * 236,  # 256 in all: the longest allowed
                        3,
                        "ticketrelay:results:a\x00b",
                        "ticketrelay:results:\ud800",
                        "ticketrelay:results:a b",
                        "ticketrelay:results:\n",
                        "ticketrelay:results:é",
                        "ticketrelay:results:*",
                        "ticketrelay:results:ok.1_2-3",
                    ],
                ),
                (
                    "metadata",
                    [
                        {"k": 1},
                        {str(i): "v" for i in range(33)},
                        [],
                        "x",
                        {"k": "ünï🎟"},
                        {"k\x00": "v"},
                        {"k": "v\x00"},
                        {"\ud800": "v"},
                        {"k": "\udfff"},
                        {"\x1b[2J": "\x07"},
                    ],
                ),
                ("version", [2, 0, "1", 1.0, True, None]),
                ("payload", [[], "x", None, {}, 1]),
            ]
        )
    )
    env[field] = draw(st.sampled_from(values))


OPS = [
    op_drop_key,
    op_change_type,
    op_odd_chars,
    op_huge_string,
    op_deep_nesting,
    op_bad_number,
    op_wrong_date,
    op_extra_field,
    op_provider_rule,
    op_envelope_field,
    op_odd_key,
]


@st.composite
def mutated_envelopes(
    draw: Draw, message_id: str = "fz-1", ops: Sequence[Callable[[Draw, dict[str, Any]], None]] = OPS
) -> dict[str, Any]:
    """A valid envelope of a random provider with one to three mutations from `ops`."""
    env = pii_envelope(draw(st.sampled_from(PROVIDERS)), message_id)
    for _ in range(draw(st.integers(1, 3 if len(ops) > 1 else 1))):
        draw(st.sampled_from(ops))(draw, env)
    return env


def deep_text(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    inner = opener * depth + "1" + closer * depth
    return ('{"message_id":"fz-deep","provider":"eguma","payload":{"items":' + inner + "}}").encode()


raw_messages = st.one_of(
    st.binary(max_size=200),  # mostly invalid UTF-8 or not JSON
    st.text(max_size=100).map(lambda t: t.encode()),
    json_values.map(lambda v: json.dumps(v).encode()),  # any JSON, mostly not an object
    st.builds(deep_text, st.integers(900, 100_000), st.sampled_from(["[", '{"a":'])),
    mutated_envelopes().map(lambda e: encode(e, True)[: len(encode(e, True)) // 2]),  # truncated
    mutated_envelopes().map(lambda e: json.dumps(e).encode("utf-16")),
)
no_message_fields = st.dictionaries(
    st.one_of(st.binary(max_size=10), st.text(max_size=10)).filter(
        lambda k: k not in (b"message", "message")
    ),
    st.binary(max_size=20),
    max_size=4,
)


# Any Unicode text (no lone surrogates: those are not text) of an allowed length is a name.
names = st.text(min_size=1, max_size=40) | st.sampled_from(
    [
        "  ",
        "\t",
        "👩🏽‍🚀🎟️",
        "שלום עליכם",
        "محمد عبد الله",
        "\u202eJane\u202c",
        "Zoë  Ñúñez\u00a0",
        "李小龍",
        "e\u0301\u0301",
        "\x00\x1f",
        "Z" * 512,
    ]
)
unicode_metadata = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5)


def with_names(provider: str, mid: str, a: str, b: str, metadata: dict[str, str]) -> dict[str, Any]:
    env = pii_envelope(provider, mid)
    p = env["payload"]
    if provider == "remypass":
        p["customer"]["name"] = a
    elif provider == "eguma":
        p["customer"].update(first_name=a, last_name=b)
    else:
        p["tickets"][0]["full_name"] = a
        p["tickets"][-1]["full_name"] = b
    env["metadata"] = metadata
    return env


def names_of(provider: str, payload: dict[str, Any]) -> list[str]:
    if provider == "remypass":
        return [payload["customer"]["name"]]
    if provider == "eguma":
        return [payload["customer"]["first_name"], payload["customer"]["last_name"]]
    return [t["full_name"] for t in payload["tickets"]]
