"""Standard Webhooks signatures (symmetric, `v1`): HMAC-SHA256 over "{id}.{timestamp}.{body}".

Secrets are written `whsec_` + base64 of the key bytes. The `webhook-signature` header is a
space-separated list of `v1,<base64>` entries, one per secret in use: during a rotation the
new and the old secret both sign, and a receiver accepts any entry it can verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 5 * 60
# The specification: a symmetric key of at least 24 bytes and at most 64.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


class WebhookVerificationError(Exception):
    """Why a delivery is not authentic. Never carries a secret or an expected signature."""


class SecretFormatError(ValueError):
    """A secret that is not `whsec_` + base64 of 24 to 64 bytes (the value is never shown)."""


def decode_secret(secret: str | bytes) -> bytes:
    """The key bytes of a `whsec_...` secret (the prefix is optional; unpadded base64 is
    accepted). Bytes are taken as the key itself."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.strip()
        if text.startswith(SECRET_PREFIX):
            text = text[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SecretFormatError("a webhook secret must be whsec_ followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretFormatError(
            f"a webhook secret must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, this one has {len(key)}"
        )
    return key


def generate_secret(n_bytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(n_bytes)).decode()


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, `v1,<base64>`. The id is ours and never holds a `.`: the signed content
    is delimited by full stops, so a `.` in it could let two different messages sign alike."""
    if "." in msg_id or not msg_id:
        raise ValueError("a webhook id must be non-empty and hold no '.'")
    digest = hmac.new(decode_secret(secret), _content(msg_id, int(timestamp), body), hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Iterable[str | bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    values = [sign(s, msg_id, timestamp, body) for s in secrets]
    if not values:
        raise ValueError("no secret to sign with")
    return " ".join(values)


def headers(secrets: Iterable[str | bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def verify(
    secrets: str | bytes | Iterable[str | bytes],
    request_headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless one `v1` signature of the header verifies with
    one of the secrets and the timestamp is within `tolerance_s` of now (either side: a
    timestamp from the future is refused too, as a replay protection)."""
    if isinstance(secrets, (str, bytes)):
        secrets = [secrets]
    keys = [decode_secret(s) for s in secrets]
    lowered = {k.lower(): v for k, v in request_headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too new")
    content = _content(msg_id, timestamp, body)
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != SIGNATURE_VERSION or not value:
            continue  # another scheme (v1a) or an empty entry: try the next one
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        # compare_digest: constant time, so a receiver cannot be used as a signing oracle.
        if any(hmac.compare_digest(given, e) for e in expected):
            return
    raise WebhookVerificationError("no matching signature")
