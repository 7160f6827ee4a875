"""Make provider-supplied text safe for an error message, a log line or a result.

A provider's error body may echo anything we sent it, and more: the account's key (as such,
percent-encoded in a URL, base64 in a Basic header), tokens under any name (`"api_key": ...`,
`access_token=`, `Authorization: Bearer ...`), the customer's name, email and phone. scrub()
removes all of these and returns short printable text.

Every pattern runs on at most MAX_SCAN characters (the input is cut first, at a separator so
no half of a token survives the cut), and none is quadratic: a pattern that starts with an
unbounded run only starts where that run starts (a look-behind), no unbounded repeat sits
inside another, and a quoted string is one unambiguous alternation. So the cost is linear in
MAX_SCAN whatever the body (tests/unit/test_redaction.py checks both properties without a
clock).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from schemas.errors import UNPRINTABLE

MESSAGE_LIMIT = 300
# What is looked at: a provider's useful words come first, and a few KB hold them all.
MAX_SCAN = 4096
# A secret or an echo shorter than this is not looked for (it would match ordinary words).
MIN_SECRET = 4
MIN_ECHO = 3
MAX_ECHOES = 512

# Where the input may be cut without leaving half a token: whitespace and the characters that
# end a value in JSON, HTML, a query string or a header.
_SEPARATORS = " \t\r\n,;&\"'<>{}[]()"

# Characters of an email's local part and domain: anything but whitespace, `@` and the
# characters that delimit it in JSON, HTML, headers or prose. Not ASCII-only: "josé@exämple.ch"
# and "用户@例子.广告" are addresses too.
_E = "[^\\s@\"'<>()\\[\\]{},;:=/\\\\|`]"
_EMAIL = re.compile(f"(?<!{_E}){_E}+(?:@|%40|&#64;|\\(at\\)){_E}+", re.IGNORECASE)
# Six or more digits, with at most two separators between two of them: phone numbers
# ("+34 (600) 123-987"), document and card numbers, birthdays. Short numbers (HTTP statuses,
# counts) stay. The separators are not digits, so a run of digits has one way to match.
_DIGITS = re.compile(r"(?<!\d)\+?\d(?:[ .\-/()]{0,2}\d){5,}")
# A URL may carry a key in its query string (e-guma), so no URL survives.
_URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s\"'<>]+", re.IGNORECASE)
# An HTTP auth scheme and its credential, wherever it appears ("Token" only after a header
# name, below: as a word of prose it is too common).
_AUTH_SCHEME = re.compile(r"(?<![\w-])(bearer|basic|digest)(\s+)(?!\[)[^\s,;&\"'<>]{6,}", re.IGNORECASE)
# A JSON Web Token: three base64url parts, the first always starts with "eyJ" ({").
_JWT = re.compile(r"(?<![\w-])eyJ[\w-]+\.[\w-]+\.[\w-]*")
# name = value, name: value, "name": "value", 'name'='value': the name is checked in Python
# (_is_secret_name), the value (a quoted string, an auth scheme and its credential, or a bare
# token) is replaced when the name says it is a credential.
_KEY_VALUE = re.compile(
    r"(?<![\w-])([\"']?)([A-Za-z][\w-]{0,63})\1(\s*[:=]\s*)"
    r"(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'"
    r"|((?:bearer|basic|digest|token)\s+(?:\[\w+\]|[^\s,;&\"'<>{}\[\]]+))"
    r"|(\[\w+\]|[^\s,;&\"'<>{}\[\]]+))",
    re.IGNORECASE,
)
_SECRET_WORDS = (
    "apikey",
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "integrationid",
    "authorization",
    "auth",
    "credential",
    "signature",
    "session",
    "cookie",
    "privatekey",
    "accesskey",
    "bearer",
)
# JSON's \uXXXX escapes in a text body, also doubled (JSON inside a JSON string): decoded so
# an escaped name or "@" is seen as such.
_JSON_ESCAPE = re.compile(r"(?<!\\)\\+u([0-9a-fA-F]{4})")
_SPACES = re.compile(r"\s{2,}")
# The last characters of a base64 text whose secret part was replaced: they mix the secret's
# last bits with the padding.
_BASE64_TAIL = re.compile(r"\[secret\][A-Za-z0-9+/_-]{0,3}={1,2}")


@dataclass(frozen=True)
class Rule:
    """One pattern and what replaces a match. A list of these, applied in order, is the
    pattern part of scrub(); the tests inspect it."""

    pattern: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]


def _is_secret_name(name: str) -> bool:
    plain = name.lower().replace("_", "").replace("-", "")
    return any(word in plain for word in _SECRET_WORDS)


def _key_value(match: re.Match[str]) -> str:
    quote_char, name, sep = match.group(1), match.group(2), match.group(3)
    if not _is_secret_name(name):
        return match.group(0)
    if match.group(4) is not None:
        value = '"[secret]"'
    elif match.group(5) is not None:
        value = "'[secret]'"
    else:
        value = "[secret]"
    return f"{quote_char}{name}{quote_char}{sep}{value}"


RULES: tuple[Rule, ...] = (
    Rule(_URL, "[url]"),
    Rule(_JWT, "[secret]"),
    Rule(_AUTH_SCHEME, r"\1\2[secret]"),
    Rule(_KEY_VALUE, _key_value),
    Rule(_EMAIL, "[email]"),
    Rule(_DIGITS, "[number]"),
    Rule(_BASE64_TAIL, "[secret]"),
)
# Every pattern scrub() runs, for the tests that check their shape.
PATTERNS: tuple[re.Pattern[str], ...] = (*(r.pattern for r in RULES), _JSON_ESCAPE, _SPACES, UNPRINTABLE)


def _cut(text: str) -> str:
    """The first MAX_SCAN characters, ended at a separator so that a secret, an email or an
    echo that straddled the cut is dropped whole instead of leaving its first half."""
    if len(text) <= MAX_SCAN:
        return text
    head = text[:MAX_SCAN]
    at = max(head.rfind(sep) for sep in _SEPARATORS)
    return head[:at] if at > 0 else ""


def _normalise(text: str) -> str:
    """Undo the encodings a provider's body may wrap our data in: percent-encoding (a query
    string, a form body), HTML entities (an error page) and JSON \\u escapes (a JSON body read
    as text). Each only shortens the text."""
    if "%" in text:
        text = unquote(text, errors="replace")
    if "&" in text:
        text = html.unescape(text)
    if "\\u" in text:
        text = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return text


def _base64_fragments(value: bytes) -> set[str]:
    """What `value` looks like inside any base64 text (a Basic header holds "id:secret"): its
    encoding at each of the three byte alignments, keeping only the characters that depend on
    `value` alone, in the standard and the URL-safe alphabet."""
    out: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value).decode()
        start = -(-offset * 8 // 6)  # ceil(8 * offset / 6)
        end = (8 * (offset + len(value))) // 6
        fragment = encoded[start:end]
        if len(fragment) >= MIN_SECRET + 2:
            out.add(fragment)
            out.add(fragment.replace("+", "-").replace("/", "_"))
    return out


def secret_forms(secret: str) -> set[str]:
    """Every form in which a provider may echo one of our secrets."""
    if len(secret) < MIN_SECRET:
        return set()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms |= {f.lower() for f in forms if "%" in f}
    forms |= _base64_fragments(secret.encode())
    return {f for f in forms if len(f) >= MIN_SECRET}


def _echo_forms(echo: str) -> set[str]:
    forms = {echo, json.dumps(echo)[1:-1], html.escape(echo), quote(echo, safe="")}
    if any(ch.isspace() for ch in echo):
        # A name may come back in parts ("Jane Secretcustomer" -> "Secretcustomer").
        forms |= {word for word in echo.split() if len(word) >= 4}
    return {f for f in forms if len(f) >= MIN_ECHO}


def payload_echoes(payload: Any) -> tuple[str, ...]:
    """Every string value of `payload` of MIN_ECHO characters or more (names, emails, phones,
    addresses, document numbers): what scrub(echoes=...) must not let a provider repeat.
    Iterative: the payload's nesting is the producer's."""
    found: list[str] = []
    seen: set[str] = set()
    stack: list[Any] = [payload]
    while stack and len(found) < MAX_ECHOES:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) >= MIN_ECHO and item not in seen:
                seen.add(item)
                found.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return tuple(found)


def _replace_literals(text: str, literals: Iterable[str], marker: str) -> str:
    """Replace each literal, ignoring case, longest first (so a name goes before its parts).
    One literal at a time: str/regex literal search, linear in the (cut) text each."""
    lowered = text.lower()
    for literal in sorted(set(literals), key=len, reverse=True):
        if literal.lower() in lowered:
            text = re.sub(re.escape(literal), marker, text, flags=re.IGNORECASE)
            lowered = text.lower()
    return text


def scrub(
    text: object,
    *,
    secrets: Iterable[str] = (),
    echoes: Iterable[str] = (),
    limit: int = MESSAGE_LIMIT,
) -> str:
    """Provider text made safe: without the given secrets (in any of their encoded forms),
    without the given echoes of our request (payload_echoes()), without URLs, credentials
    under any name, auth headers, tokens, email addresses and long digit runs; control
    characters flattened; at most `limit` characters."""
    if text is None:
        return ""
    value = _normalise(_cut(text if isinstance(text, str) else str(text)))
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= secret_forms(secret)
    value = _replace_literals(value, forms, "[secret]")
    echo_forms: set[str] = set()
    for echo in list(echoes)[:MAX_ECHOES]:
        if echo:
            echo_forms |= _echo_forms(echo)
    value = _replace_literals(value, echo_forms, "[redacted]")
    for rule in RULES:
        value = rule.pattern.sub(rule.replace, value)
    value = UNPRINTABLE.sub(" ", value)
    value = _SPACES.sub(" ", value).strip()
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value
