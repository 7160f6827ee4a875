"""Standard Webhooks signatures: the specification's Python library test vector, and verify()
as the specification describes it (several signatures, 5-minute tolerance, v1 only)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from worker.webhooks.signing import (
    SecretFormatError,
    WebhookVerificationError,
    decode_secret,
    generate_secret,
    headers,
    sign,
    signature_header,
    verify,
)

# From the standard-webhooks Python library's tests (test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": signature}


def test_sign_matches_the_specification_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    # The prefix is optional, and raw key bytes sign the same.
    assert sign(VECTOR_SECRET.removeprefix("whsec_"), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    assert sign(decode_secret(VECTOR_SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_sign_is_hmac_sha256_over_id_timestamp_body() -> None:
    secret = generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body = b'{"a":"\xc3\xa9"}'
    digest = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign(secret, "msg_1", 1700000000, body) == "v1," + base64.b64encode(digest).decode()


def test_verify_accepts_the_vector_within_tolerance_and_refuses_outside() -> None:
    verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS)
    verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + 300)
    verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS - 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY, now=VECTOR_TS - 301)


def test_verify_refuses_a_changed_body_id_or_timestamp() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(VECTOR_SECRET, _vector_headers(), VECTOR_BODY + b" ", now=VECTOR_TS)
    changed_id = {**_vector_headers(), "webhook-id": VECTOR_ID + "x"}
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(VECTOR_SECRET, changed_id, VECTOR_BODY, now=VECTOR_TS)
    changed_ts = {**_vector_headers(), "webhook-timestamp": str(VECTOR_TS + 1)}
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(VECTOR_SECRET, changed_ts, VECTOR_BODY, now=VECTOR_TS)
    # The vector's signature with its last character changed (the library's invalid case).
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify(VECTOR_SECRET, _vector_headers(VECTOR_SIGNATURE[:-2] + "A="), VECTOR_BODY, now=VECTOR_TS)


def test_verify_finds_the_good_signature_among_several() -> None:
    noise = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    entries = [noise, "v2," + VECTOR_SIGNATURE[3:], "v1a,bm90IGEgc2lnbmF0dXJl", VECTOR_SIGNATURE, noise]
    header = " ".join(entries)
    verify(VECTOR_SECRET, _vector_headers(header), VECTOR_BODY, now=VECTOR_TS)
    # The right bytes under another version are not a v1 signature.
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, _vector_headers("v2," + VECTOR_SIGNATURE[3:]), VECTOR_BODY, now=VECTOR_TS)


def test_rotation_old_and_new_secret_both_sign() -> None:
    old, new = generate_secret(), generate_secret()
    h = headers([new, old], "msg_rot", 1700000000, b"{}")
    assert len(h["webhook-signature"].split(" ")) == 2
    verify(old, h, b"{}", now=1700000000)  # a receiver not yet rotated
    verify(new, h, b"{}", now=1700000000)  # a receiver already rotated
    verify([generate_secret(), new], h, b"{}", now=1700000000)
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), h, b"{}", now=1700000000)


def test_missing_or_malformed_headers_are_refused() -> None:
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        h = _vector_headers()
        del h[name]
        with pytest.raises(WebhookVerificationError, match="missing"):
            verify(VECTOR_SECRET, h, VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError, match="integer"):
        verify(VECTOR_SECRET, {**_vector_headers(), "webhook-timestamp": "hello"}, VECTOR_BODY, now=VECTOR_TS)
    # Header names are case-insensitive.
    upper = {k.upper(): v for k, v in _vector_headers().items()}
    verify(VECTOR_SECRET, upper, VECTOR_BODY, now=VECTOR_TS)


def test_secret_format_is_checked_without_showing_the_secret() -> None:
    short = "whsec_" + base64.b64encode(b"x" * 23).decode()
    with pytest.raises(SecretFormatError) as info:
        decode_secret(short)
    assert short[6:] not in str(info.value)
    with pytest.raises(SecretFormatError):
        decode_secret("whsec_not base64!")
    assert len(decode_secret(generate_secret())) == 32


def test_an_id_with_a_full_stop_cannot_be_signed() -> None:
    with pytest.raises(ValueError):
        sign(VECTOR_SECRET, "msg.1", VECTOR_TS, b"{}")
    with pytest.raises(ValueError):
        signature_header([], "msg_1", VECTOR_TS, b"{}")
