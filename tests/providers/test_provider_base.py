"""The shared rules of worker/providers/base.py and the registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from provider_helpers import ACCOUNTS, raising

from worker.backoff import parse_retry_after
from worker.providers import PROVIDER_NAMES, build_client, get_provider
from worker.providers.base import (
    Outcome,
    OutcomeKind,
    classify_response,
    derive_qr_code,
    error_detail,
    keep_doubt,
    scrub,
    send,
    with_derived_qr_codes,
)


def test_scrub_removes_emails_digits_secrets_and_truncates() -> None:
    text = "Invalid email jane.roe@example.com, phone +34 666 666 666, key sk-SECRET-123"
    out = scrub(text, secrets=["sk-SECRET-123"])
    assert "jane.roe" not in out and "@" not in out
    assert "666" not in out
    assert "sk-SECRET-123" not in out
    assert "[email]" in out and "[number]" in out and "[secret]" in out
    assert len(scrub("x" * 1000)) == 300
    assert scrub("line\nbreak\x00here") == "line break here"
    assert scrub("HTTP 400 for 2 tickets") == "HTTP 400 for 2 tickets"  # short numbers stay
    assert scrub(None) == ""
    url = scrub("see https://api.e-guma.ch/v1/x.json?apikey=abc123 now; apikey=zzz")
    assert "abc123" not in url and "zzz" not in url and "e-guma.ch" not in url


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def _resp(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"message": "why"})


@pytest.mark.parametrize(
    ("status", "kind", "type_", "may_have_created"),
    [
        (500, OutcomeKind.RETRY, "provider_error", True),
        (502, OutcomeKind.RETRY, "provider_error", True),
        (504, OutcomeKind.RETRY, "provider_error", True),
        (503, OutcomeKind.RETRY, "provider_unavailable", True),
        (408, OutcomeKind.RETRY, "timeout", True),
        (409, OutcomeKind.RETRY, "in_progress", True),
        (429, OutcomeKind.RETRY, "rate_limited", False),
        (400, OutcomeKind.FAILED, "validation_error", False),
        (422, OutcomeKind.FAILED, "validation_error", False),
        (404, OutcomeKind.FAILED, "not_found", False),
        (401, OutcomeKind.FAILED, "auth_error", False),
        (403, OutcomeKind.FAILED, "auth_error", False),
        (302, OutcomeKind.FAILED, "configuration_error", False),
        (410, OutcomeKind.FAILED, "provider_rejected", False),
    ],
)
def test_classification_table(status: int, kind: OutcomeKind, type_: str, may_have_created: bool) -> None:
    outcome = classify_response(_resp(status), label="P", detail="why")
    assert outcome.kind is kind
    assert outcome.error is not None
    assert outcome.error.type == type_
    assert outcome.error.http_status == status
    assert outcome.error.retryable is (kind is OutcomeKind.RETRY)
    assert outcome.may_have_created is may_have_created
    if status != 302:  # a redirect's text is not copied: it may hold a URL
        assert "why" in outcome.error.message


def test_auth_error_says_configuration_problem() -> None:
    outcome = classify_response(_resp(401), label="P")
    assert outcome.error is not None and "configuration problem" in outcome.error.message


def test_429_carries_retry_after() -> None:
    outcome = classify_response(_resp(429, {"Retry-After": "12"}), label="P")
    assert outcome.retry_after_s == 12.0


def test_classify_refuses_success() -> None:
    with pytest.raises(ValueError):
        classify_response(httpx.Response(200), label="P")


@pytest.mark.parametrize(
    ("exc", "type_", "may_have_created"),
    [
        (httpx.ConnectError, "network_error", False),
        (httpx.ConnectTimeout, "timeout", False),
        (httpx.PoolTimeout, "timeout", False),
        (httpx.ReadTimeout, "timeout", True),
        (httpx.WriteTimeout, "timeout", True),
        (httpx.RemoteProtocolError, "network_error", True),
        (httpx.ReadError, "network_error", True),
        (httpx.WriteError, "network_error", True),
    ],
)
def test_send_turns_transport_errors_into_retry(
    exc: type[httpx.TransportError], type_: str, may_have_created: bool
) -> None:
    with httpx.Client(transport=raising(exc)) as client:
        result = send(client, client.build_request("GET", "http://x.test/?apikey=SECRET"), label="P")
    assert isinstance(result, Outcome)
    assert result.kind is OutcomeKind.RETRY
    assert result.error is not None and result.error.type == type_
    assert result.may_have_created is may_have_created
    assert "SECRET" not in result.error.message and "x.test" not in result.error.message


def test_error_detail_shapes() -> None:
    assert error_detail(httpx.Response(400, json={"success": False, "message": "m"})) == "m"
    assert error_detail(httpx.Response(400, json={"error": "e"})) == "e"
    combined = httpx.Response(400, json={"error": "validation_error", "message": "bad date"})
    assert error_detail(combined, ("error", "message")) == "validation_error: bad date"
    assert error_detail(httpx.Response(401, text="Unauthorized")) == "Unauthorized"
    html = httpx.Response(502, headers={"content-type": "text/html"}, content=b"<html>x</html>")
    assert error_detail(html) is None


def test_derived_qr_codes_are_stable_distinct_and_fill_only_gaps() -> None:
    code = derive_qr_code("key-1", 0)
    assert code == derive_qr_code("key-1", 0)
    assert code != derive_qr_code("key-1", 1) != derive_qr_code("key-2", 0)
    assert len(code) == 16 and code.startswith("TR") and code.isupper()
    payload = {"tickets": [{"qr_code": "MINE"}, {}]}
    body = with_derived_qr_codes(payload, "key-1")
    assert body["tickets"] == [{"qr_code": "MINE"}, {"qr_code": derive_qr_code("key-1", 1)}]
    assert payload == {"tickets": [{"qr_code": "MINE"}, {}]}  # the stored payload is untouched


def test_keep_doubt_turns_failed_into_needs_review_and_retry_into_doubtful() -> None:
    failed = classify_response(_resp(401), label="P")
    assert keep_doubt(failed, False).kind is OutcomeKind.FAILED
    assert keep_doubt(failed, True).kind is OutcomeKind.NEEDS_REVIEW
    retry = classify_response(_resp(503), label="P")
    assert keep_doubt(retry, True).may_have_created is True


def test_registry_and_client() -> None:
    assert set(PROVIDER_NAMES) == {"remypass", "fourvenues", "fourvenues_channels", "eguma"}
    for name in PROVIDER_NAMES:
        assert get_provider(name).name == name
    with pytest.raises(KeyError):
        get_provider("nope")
    acct = ACCOUNTS[("eguma", "default")].model_copy(update={"timeout_s": 3.5})
    with build_client(acct) as client:
        assert client.timeout.read == 3.5
        assert client.follow_redirects is False
        assert "authorization" not in client.headers and "x-api-key" not in client.headers
