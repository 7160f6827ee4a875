"""worker.redaction.scrub: nothing secret or personal survives, in any shape a provider's
error body may hold it; and its cost is bounded by construction (no clock in these tests)."""

from __future__ import annotations

import base64
import json
import re
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import UNPRINTABLE
from worker import redaction
from worker.redaction import MAX_SCAN, RULES, payload_echoes, scrub, secret_forms

# The account's own secrets, with characters that percent-encoding and base64 change.
API_KEY = "live_9f8e7d6c5b4a3f2e1d0c"
INTEGRATION_ID = "integ-77aa88bb99"
SECRET = "Sh4red/Secr3t+Key=2026"
SECRETS = (API_KEY, INTEGRATION_ID, SECRET)
# Credentials the provider issued or leaked, not ours: caught by their shape or their name.
TOKEN = "tokQWERTY123456"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEiLCJleHAiOjE3MDAwMDB9.c2lnbmF0dXJlLXBhcnQ"
REFRESH = "rfr-ZXCVB98765"
SESSION = "sess8a7b6c5d4e"
# The customer, as our payload carried them.
FIRST, LAST = "Zoë", "Secretcustomer"
NAME = f"{FIRST} {LAST}"
EMAIL = "zoë.secret-customer@exämple.ch"
ASCII_EMAIL = "jane.secret-customer@example.com"
PHONE = "+34 600 123 987"
DOC = "X9876543Z"
ADDRESS = "Calle Mayorquina 17"
PAYLOAD: dict[str, Any] = {
    "quantity": 2,
    "ticket_rate_id": "rate_1",
    "tickets": [
        {"full_name": NAME, "email": EMAIL, "phone": PHONE, "personal_document_number": DOC},
        {"full_name": "Ana Lópezmartín", "email": ASCII_EMAIL, "address": ADDRESS},
    ],
}
ECHOES = payload_echoes(PAYLOAD)

# What must never come out, compared ignoring case.
FORBIDDEN = [
    *SECRETS,
    quote(SECRET, safe=""),
    quote_plus(SECRET),
    base64.b64encode(SECRET.encode()).decode().rstrip("="),
    TOKEN,
    JWT,
    JWT.split(".")[1],
    REFRESH,
    SESSION,
    FIRST,
    LAST,
    "Lópezmartín",
    "secret-customer",
    "exämple",
    "600 123 987",
    "600123987",
    "600-123-987",
    "9876543",
    "Mayorquina",
]

B64_SECRET = base64.b64encode(SECRET.encode()).decode()
B64_URLSAFE = base64.urlsafe_b64encode(SECRET.encode()).decode()
B64_BASIC = base64.b64encode(f"{INTEGRATION_ID}:{SECRET}".encode()).decode()
B64_BASIC_KEY = base64.b64encode(f"user:{API_KEY}".encode()).decode()
PCT = quote(SECRET, safe="")
PCT_LOWER = PCT.lower()
PCT_PLUS = quote_plus(SECRET)
PCT_EMAIL = quote(ASCII_EMAIL, safe="")
UPPER_NAME = NAME.upper()


def j(obj: Any) -> str:
    return json.dumps(obj)


def ja(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True).replace("@", "\\u0040")


CORPUS: list[str] = [
    # --- JSON bodies --------------------------------------------------------------------------
    j({"error": "unauthorized", "message": f"invalid api key {API_KEY}"}),
    j({"api_key": API_KEY, "message": "key not allowed"}),
    j({"apiKey": API_KEY, "status": 401}),
    j({"x-api-key": API_KEY, "detail": "revoked"}),
    j({"x_api_key": API_KEY, "detail": "revoked"}),
    j({"token": TOKEN, "error": "expired"}),
    j({"access_token": TOKEN, "refresh_token": REFRESH, "error": "invalid_grant"}),
    j({"client_secret": SECRET, "client_id": "abc", "error": "invalid_client"}),
    j({"errors": [{"field": "email", "message": f"{EMAIL} is already registered"}]}),
    j({"errors": {"tickets.0.full_name": [f"'{NAME}' too long"]}}),
    j({"message": f"Customer {UPPER_NAME} <{ASCII_EMAIL}> phone {PHONE}"}),
    j({"message": "duplicate", "request": PAYLOAD}),
    j(
        {
            "message": "bad request",
            "headers": {"Authorization": f"Bearer {JWT}", "X-Integration-Id": INTEGRATION_ID},
        }
    ),
    j({"message": "bad", "headers": {"authorization": f"Basic {B64_BASIC}"}}),
    j({"error": {"code": 422, "message": f"document {DOC} invalid for {NAME}"}}),
    j({"message": f"echo: {ja({'email': ASCII_EMAIL, 'name': NAME})}"}),
    ja({"message": f"{NAME} / {EMAIL} / {PHONE}"}),  # escaped: \u00eb, \u0040
    j({"password": "hunter2-" + SECRET, "message": "login failed"}),
    j({"session_id": SESSION, "message": "session expired"}),
    j({"Cookie": f"sid={SESSION}; token={TOKEN}", "message": "rejected"}),
    j({"integration_id": INTEGRATION_ID, "secret": SECRET, "message": "v1 auth failed"}),
    j({"message": f"signature mismatch for key {B64_URLSAFE}"}),
    j({"message": f"address {ADDRESS} is not deliverable", "customer": {"phone": "0034600123987"}}),
    j({"message": f"ticket holder {FIRST} {LAST} already checked in"}),
    j({"data": None, "message": f"Unknown account for {PCT_EMAIL}"}),
    j({"message": f"id_token={JWT}"}),
    j({"meta": {"private_key": "-----BEGIN KEY-----MIIBVQIBADANBg-----END-----"}, "message": "x"}),
    # --- plain text bodies --------------------------------------------------------------------
    f"401 Unauthorized: api_key={API_KEY}",
    f"Invalid apikey {API_KEY} for host",
    f"GET /v1/tickets?apikey={API_KEY}&lang=de failed",
    f"GET /v1/tickets?apikey={PCT}&x=1 failed",
    f"signature over {PCT_LOWER} does not match",
    f"form body: email={PCT_EMAIL}&secret={PCT_PLUS}",
    f"Authorization: Bearer {JWT}",
    f"authorization: bearer {TOKEN}",
    f"Authorization: Token {TOKEN}",
    f"Authorization: Basic {B64_BASIC}",
    f"Proxy-Authorization: Basic {B64_BASIC_KEY}",
    f"token {B64_SECRET} rejected",
    f"access_token={TOKEN}; client_secret={SECRET}; x_api_key={API_KEY}",
    f"refresh-token: {REFRESH}",
    f"X-Api-Key: {API_KEY}\r\nX-Integration-Secret: {SECRET}\r\n",
    f"Booking for {NAME} ({EMAIL}) failed: seat taken",
    f"Kunde {UPPER_NAME}, Telefon {PHONE}, Ausweis {DOC}",
    f"contact: josé.müller@exämple.ch, {ASCII_EMAIL}",
    f"user 用户@例子.广告 not found; also {EMAIL}",
    "jane.secret-customer(at)example.com is blocked; phone (+34) 600-123-987",
    "Phone 600.123.987 / 600 123 987 / +34600123987 invalid",
    f"\x00\x1b[31m{NAME}\x07 \u202e{EMAIL}\u202c NUL-laden",
    f"Traceback: File app.py, line 3, in issue\n  KeyError: '{DOC}' for {NAME}",
    f"see https://api.e-guma.ch/v1/ticketing/booking.json?apikey={API_KEY} for details",
    f"wss://stream.example.com/feed?token={TOKEN} closed",
    f"{SECRET} was echoed raw",
    f"{B64_URLSAFE} urlsafe form",
    "x" * 100 + f" {TOKEN[:3]}" + " y" * 3000 + f" api_key={API_KEY} late in a long body",
    # --- HTML bodies --------------------------------------------------------------------------
    f"<html><body><h1>403</h1><p>Key {API_KEY} blocked</p></body></html>",
    f"<table><tr><td>Name</td><td>{NAME}</td></tr><tr><td>Email</td><td>{EMAIL}</td></tr></table>",
    f"<p>Dear Zo&euml; {LAST}, your booking failed.</p><p>jane.secret-customer&#64;example.com</p>",
    f'<input type="hidden" name="api_key" value="{API_KEY}"><input name="token" value="{TOKEN}">',
    f"<pre>Authorization: Bearer {JWT}</pre>",
    f'<a href="https://provider.example/reset?email={PCT_EMAIL}&amp;secret={PCT}">reset</a>',
    f"<!-- debug: client_secret={SECRET} phone={PHONE} doc={DOC} -->",
]


def test_the_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 50
    assert sum(body.lstrip().startswith("{") for body in CORPUS) >= 20
    assert sum(body.lstrip().startswith("<") for body in CORPUS) >= 5


@pytest.mark.parametrize("body", CORPUS, ids=[f"body{i}" for i in range(len(CORPUS))])
def test_nothing_secret_or_personal_survives(body: str) -> None:
    out = scrub(body, secrets=SECRETS, echoes=ECHOES)
    folded = out.casefold()
    for needle in FORBIDDEN:
        assert needle.casefold() not in folded, (needle, out)
    assert "@" not in out and "%40" not in out.upper()
    assert len(out) <= 300 and out.isprintable(), out


@pytest.mark.parametrize("body", CORPUS[:10], ids=[f"body{i}" for i in range(10)])
def test_the_whole_body_is_scrubbed_when_the_limit_is_large(body: str) -> None:
    out = scrub(body, secrets=SECRETS, echoes=ECHOES, limit=100_000)
    for needle in FORBIDDEN:
        assert needle.casefold() not in out.casefold(), (needle, out)


def test_the_old_behaviour_holds() -> None:
    """What worker.providers.base.scrub did, and its callers rely on."""
    text = "Invalid email jane.roe@example.com, phone +34 666 666 666, key sk-SECRET-123"
    out = scrub(text, secrets=["sk-SECRET-123"])
    assert "jane.roe" not in out and "@" not in out and "666" not in out and "sk-SECRET-123" not in out
    assert "[email]" in out and "[number]" in out and "[secret]" in out
    assert len(scrub("x " * 1000)) == 300
    assert scrub("line\nbreak\x00here") == "line break here"
    assert scrub("HTTP 400 for 2 tickets") == "HTTP 400 for 2 tickets"  # short numbers stay
    assert scrub(None) == ""
    assert scrub(404) == "404"
    url = scrub("see https://api.e-guma.ch/v1/x.json?apikey=abc123 now; apikey=zzz")
    assert "abc123" not in url and "zzz" not in url and "e-guma.ch" not in url
    assert url == "see [url] now; apikey=[secret]"


def test_plain_provider_words_stay_readable() -> None:
    msg = "category_id 7 is sold out for 2026; quantity must be at most 10 (got 12)"
    assert scrub(msg) == msg
    assert scrub("The token has expired, please retry") == "The token has expired, please retry"
    assert scrub('{"error": "invalid_rate", "message": "rate not found"}', secrets=SECRETS) == (
        '{"error": "invalid_rate", "message": "rate not found"}'
    )


def test_payload_echoes_are_every_string_of_three_or_more() -> None:
    payload = {"a": "ab", "b": "abc", "c": [{"d": NAME}, 5, None, True, {"e": ["xyz", "ab"]}], "f": "abc"}
    assert set(payload_echoes(payload)) == {"abc", NAME, "xyz"}
    deep: Any = "leaf-value"
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert payload_echoes({"x": deep}) == ("leaf-value",)


def test_an_echo_is_removed_in_any_case_and_in_parts() -> None:
    out = scrub(f"holder {UPPER_NAME}; surname {LAST.lower()}", echoes=[NAME])
    assert LAST.lower() not in out.lower() and "ZOË" not in out and out.count("[redacted]") == 2


def test_secret_forms_cover_encodings_and_base64_alignments() -> None:
    forms = secret_forms(SECRET)
    assert {SECRET, quote(SECRET, safe=""), quote_plus(SECRET)} <= forms
    for prefix in ("", "a", "ab", "user:"):  # each alignment of the secret inside base64
        encoded = base64.b64encode((prefix + SECRET).encode()).decode()
        assert any(form in encoded for form in forms), prefix
        out = scrub(f"Basic {encoded}x", secrets=[SECRET], limit=1000)
        assert not any(f in out for f in forms) and "[secret]" in out
    assert secret_forms("abc") == set()  # too short to look for


def test_the_cut_never_leaves_half_a_token() -> None:
    head = "a " * ((MAX_SCAN - 10) // 2)
    body = head + "api_key=" + API_KEY  # the key straddles the MAX_SCAN boundary
    out = scrub(body, limit=100_000)
    assert API_KEY[:4] not in out and "live_" not in out


# --- linearity, without a clock ------------------------------------------------------------

ADVERSARIAL = [
    "a" * 200_000,
    "a." * 100_000,
    "a@" * 100_000,
    "a@a." * 50_000,
    "%" * 200_000,
    "1" * 199_999 + "x",
    "1 " * 100_000,
    'x="' * 66_000,
    "x=" * 100_000,
    "token " * 33_000,
    "bearer " * 28_000,
    "eyJ" + "a" * 199_990,
    "\\u00" * 50_000,
    "&#" * 100_000,
    "http://" * 28_000,
    "-" * 200_000,
    "a-" * 100_000,
]


def test_every_pattern_sees_at_most_max_scan_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 KB body is cut before any pattern runs: each pattern sees at most MAX_SCAN
    characters (plus what a replacement adds), so even a slow pattern has a bounded input."""
    seen: list[int] = []

    class Spy:
        def __init__(self, pattern: re.Pattern[str]) -> None:
            self.pattern = pattern

        def sub(self, repl: Any, string: str) -> str:
            seen.append(len(string))
            return self.pattern.sub(repl, string)

    spied = tuple(redaction.Rule(Spy(r.pattern), r.replace) for r in RULES)  # type: ignore[arg-type]
    monkeypatch.setattr(redaction, "RULES", spied)
    original_normalise = redaction._normalise
    normalised: list[int] = []

    def spy_normalise(text: str) -> str:
        normalised.append(len(text))
        return original_normalise(text)

    monkeypatch.setattr(redaction, "_normalise", spy_normalise)
    for body in ADVERSARIAL:
        seen.clear()
        out = scrub(body, secrets=SECRETS, echoes=ECHOES, limit=100_000)
        assert len(seen) == len(RULES)
        # Replacements may lengthen a match ("a@a" -> "[email]"); never beyond a few times.
        assert max(seen) <= 3 * MAX_SCAN, (body[:20], seen)
        assert len(out) <= 3 * MAX_SCAN
    assert normalised and max(normalised) <= MAX_SCAN


def _repeats(tree: Any) -> Any:
    """(node, max, body) for every repeat in a parsed pattern, depth first."""
    for op, arg in tree:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _min, high, body = arg
            yield high, body
            yield from _repeats(body)
        elif name == "SUBPATTERN":
            yield from _repeats(arg[-1])
        elif name == "BRANCH":
            for branch in arg[1]:
                yield from _repeats(branch)
        elif name in ("ASSERT", "ASSERT_NOT"):
            yield from _repeats(arg[1])


UNBOUNDED = sre_parse.MAXREPEAT


def _is_run(node: Any) -> bool:
    op, arg = node
    return str(op) in ("MAX_REPEAT", "MIN_REPEAT") and (arg[1] == UNBOUNDED or arg[1] > 64)


IDS = [p.pattern[:30] for p in redaction.PATTERNS]


@pytest.mark.parametrize("pattern", redaction.PATTERNS, ids=IDS)
def test_no_unbounded_repeat_inside_another(pattern: re.Pattern[str]) -> None:
    """The catastrophic shape, (x+)+: an unbounded repeat whose body holds a repeat of more
    than two. Bounded inner repeats ({0,2} separators in a digit run) stay linear."""
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    for high, body in _repeats(tree):
        if high == UNBOUNDED or high > 64:
            for inner_high, _inner in _repeats(body):
                assert inner_high <= 2, pattern.pattern


@pytest.mark.parametrize("pattern", redaction.PATTERNS, ids=IDS)
def test_a_pattern_that_opens_with_a_run_starts_only_where_the_run_starts(pattern: re.Pattern[str]) -> None:
    """What made the old email pattern quadratic: trying a match at every character of a long
    run, each scanning to its end before failing on what follows. A pattern that opens with an
    unbounded run and needs more after it must be guarded by a look-behind (a match starts
    only where such a run starts); a pattern that is only the run cannot fail after it."""
    tree = list(sre_parse.parse(pattern.pattern, pattern.flags))
    while tree and str(tree[0][0]) == "SUBPATTERN" and len(tree) == 1:
        tree = list(tree[0][1][-1])
    if tree and _is_run(tree[0]):
        assert len(tree) == 1, f"opens with an unguarded run: {pattern.pattern}"
    if tree and str(tree[0][0]) == "SUBPATTERN":
        inner = list(tree[0][1][-1])
        assert not (inner and _is_run(inner[0])), pattern.pattern


def test_the_old_email_pattern_is_gone() -> None:
    """The shape that took 0.7 s on 20,000 characters: an unguarded run before the `@`."""
    for pattern in redaction.PATTERNS:
        assert not pattern.pattern.startswith("[A-Za-z0-9._%+\\-]+@")


def test_the_shape_checks_catch_the_old_email_pattern() -> None:
    """The checks above can fail: the pattern scrub used before (quadratic on a long run of
    local-part characters) opens with an unguarded run."""
    old = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
    with pytest.raises(AssertionError):
        test_a_pattern_that_opens_with_a_run_starts_only_where_the_run_starts(old)
    with pytest.raises(AssertionError):
        test_no_unbounded_repeat_inside_another(re.compile(r"(?:a+b?)+c"))


# --- property: wherever it is put, in whatever surroundings, it does not survive ------------

_noise = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_shapes = st.sampled_from(
    [
        lambda s: s,
        lambda s: quote(s, safe=""),
        lambda s: quote_plus(s),
        lambda s: base64.b64encode(("u:" + s).encode()).decode(),
        lambda s: base64.b64encode(("ab" + s).encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
        lambda s: json.dumps({"api_key": s}),
        lambda s: f"Authorization: Bearer {s}",
    ]
)


@settings(max_examples=300, deadline=None)
@given(before=_noise, after=_noise, shape=_shapes, secret=st.sampled_from(SECRETS))
def test_a_secret_in_any_shape_and_surroundings_is_removed(
    before: str, after: str, shape: Any, secret: str
) -> None:
    out = scrub(before + shape(secret) + after, secrets=SECRETS, limit=100_000)
    for form in secret_forms(secret):
        assert form not in out, (form, out)


@settings(max_examples=300, deadline=None)
@given(before=_noise, after=_noise, echo=st.sampled_from([NAME, EMAIL, ASCII_EMAIL, DOC, ADDRESS]))
def test_an_echo_in_any_surroundings_is_removed(before: str, after: str, echo: str) -> None:
    out = scrub(f"{before} {echo} {after}", echoes=ECHOES, limit=100_000)
    assert echo.casefold() not in out.casefold(), out
    assert not UNPRINTABLE.search(out) and len(out) <= 3 * MAX_SCAN
