"""Turn one raw stream entry into an accepted booking or a clear rejection. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas.envelope import (
    ACCOUNT_PATTERN,
    CANCEL_OPTION_FIELDS,
    MAX_REPLY_TO,
    MESSAGE_ID_PATTERN,
    PROVIDERS,
    REPLY_TO_PATTERN,
    CancelOptions,
    Envelope,
)
from schemas.errors import clean_text, describe
from schemas.keys import idempotency_key
from schemas.payloads import PAYLOAD_MODELS
from worker.ledger import NewBooking
from worker.settings import AccountConfig, Settings

_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
_ACCOUNT = re.compile(ACCOUNT_PATTERN)
_REPLY_TO = re.compile(REPLY_TO_PATTERN)
# Used only to find the message_id of an entry too large to parse.
_MESSAGE_ID_IN_TEXT = re.compile(rb'"message_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    idempotency_key: str
    reply_to: str
    payload_sha256: str

    def booking(self) -> NewBooking:
        """The ledger row this message becomes (generation 0: a producer's message)."""
        env = self.envelope
        return NewBooking(
            idempotency_key=self.idempotency_key,
            message_id=env.message_id,
            provider=env.provider,
            account=env.account,
            generation=0,
            payload=env.payload,
            payload_sha256=self.payload_sha256,
            reply_to=self.reply_to,
            metadata=env.metadata,
            operation=env.operation,
            cancels=env.cancels,
        )


@dataclass(frozen=True)
class Rejected:
    error_type: str
    reason: str
    message_id: str | None = None
    provider: str = "unknown"
    account: str = "default"
    reply_to: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    raw_sha256: str = ""

    def __post_init__(self) -> None:
        # Whoever builds a rejection, its reason goes into SQL, Redis, a result and the log:
        # printable, one line, bounded.
        object.__setattr__(self, "reason", clean_text(self.reason))

    @property
    def idempotency_key(self) -> str | None:
        if self.message_id is None:
            return None
        return idempotency_key(self.provider, self.account, self.message_id, 0)


def reply_to_ok(value: str, prefix: str) -> bool:
    """The configured prefix, then only `A-Za-z0-9:._-`, at most 256 characters in all: the
    key becomes a Redis stream name and a SQL value, so nothing else may reach either."""
    return len(value) <= MAX_REPLY_TO and value.startswith(prefix) and _REPLY_TO.fullmatch(value) is not None


def payload_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _field(fields: dict[Any, Any], name: str) -> bytes | None:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def identifiers(data: dict[str, Any], default_account: str | None = None) -> dict[str, str]:
    """An envelope's message_id, provider and account, each only when it is valid: what an
    invalid envelope may be named by (a rejected result, a dead letter) without echoing
    anything else it holds. `default_account` is used when it has none."""
    out: dict[str, str] = {}
    mid = data.get("message_id")
    if isinstance(mid, str) and _MESSAGE_ID.fullmatch(mid):
        out["message_id"] = mid
    prov = data.get("provider")
    if isinstance(prov, str) and prov in PROVIDERS:
        out["provider"] = prov
    acct = data.get("account", default_account)
    if isinstance(acct, str) and _ACCOUNT.fullmatch(acct):
        out["account"] = acct
    return out


def _identity(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """What can be read from an invalid envelope to address a `rejected` result."""
    out: dict[str, Any] = dict(identifiers(data, default_account="default"))
    reply_to = data.get("reply_to")
    if isinstance(reply_to, str) and reply_to_ok(reply_to, settings.reply_to_prefix):
        out["reply_to"] = reply_to
    meta = data.get("metadata")
    if (
        isinstance(meta, dict)
        and len(meta) <= 32
        and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        out["metadata"] = meta
    return out


def _has_lone_surrogate(data: Any) -> bool:
    """JSON's "\\ud800" escape (and json.loads' reading of bytes) let a string hold half of a
    UTF-16 pair, which no UTF-8 encoder accepts. Iterative: the nesting depth is the input's."""
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def validate_entry(
    fields: dict[Any, Any],
    settings: Settings,
    accounts: dict[tuple[str, str], AccountConfig],
) -> Accepted | Rejected:
    raw = _field(fields, "message")
    if raw is None:
        return Rejected("invalid_message", "the entry has no `message` field holding the JSON envelope")
    raw_sha = hashlib.sha256(raw).hexdigest()
    if len(raw) > settings.max_message_bytes:
        found = _MESSAGE_ID_IN_TEXT.search(raw[:65536])
        return Rejected(
            "too_large",
            f"message is {len(raw)} bytes, more than the limit of {settings.max_message_bytes}",
            message_id=found.group(1).decode() if found else None,
            raw_sha256=raw_sha,
        )
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        return Rejected("invalid_json", "message is not UTF-8 text", raw_sha256=raw_sha)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        pos = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        return Rejected("invalid_json", f"message is not valid JSON: {detail}{pos}", raw_sha256=raw_sha)
    except ValueError:  # an integer of more than sys.get_int_max_str_digits() (4300) digits
        return Rejected(
            "invalid_json", "message is not valid JSON: a number has too many digits", raw_sha256=raw_sha
        )
    if not isinstance(data, dict):
        return Rejected("invalid_message", "the envelope must be a JSON object", raw_sha256=raw_sha)

    ident = _identity(data, settings)
    if _has_lone_surrogate(data):
        # Not Unicode text: it could be neither stored (PostgreSQL json), sent, nor published.
        # Only the pattern-checked ASCII identity is kept to address the `rejected` result.
        return Rejected(
            "invalid_json",
            "message is not valid Unicode text: it contains a lone surrogate (\\ud800-\\udfff)",
            raw_sha256=raw_sha,
            **{k: v for k, v in ident.items() if k in ("message_id", "provider", "account")},
        )

    def reject(error_type: str, reason: str) -> Rejected:
        return Rejected(error_type, reason, raw_sha256=raw_sha, **ident)

    try:
        env = Envelope.model_validate(data)
    except ValidationError as exc:
        provider = data.get("provider")
        if "provider" not in ident and provider is not None:
            return reject("unknown_provider", describe(exc, data=data))
        return reject("invalid_envelope", describe(exc, data=data))
    except RecursionError:
        return reject("invalid_envelope", "the envelope is nested too deeply")

    reply_to = env.reply_to or settings.results_stream
    if not reply_to_ok(reply_to, settings.reply_to_prefix):
        return reject(
            "invalid_envelope",
            f"reply_to must start with the prefix {settings.reply_to_prefix!r} and hold only "
            "A-Za-z0-9 and :._- (at most 256 characters)",
        )
    account = accounts.get((env.provider, env.account))
    if account is None:
        return reject("unknown_account", f"no account of that name is configured for provider {env.provider}")
    missing = account.missing_credentials()
    if missing is not None:
        return reject("missing_credentials", missing)
    if env.operation == "cancel":
        return _validate_cancel(env, reply_to, reject)
    try:
        PAYLOAD_MODELS[env.provider].model_validate(env.payload)
    except ValidationError as exc:
        return reject(
            "invalid_payload", f"{env.provider} payload is invalid: {describe(exc, 'payload', env.payload)}"
        )
    except RecursionError:
        return reject("invalid_payload", "the payload is nested too deeply")

    return Accepted(
        envelope=env,
        idempotency_key=idempotency_key(env.provider, env.account, env.message_id, 0),
        reply_to=reply_to,
        payload_sha256=payload_hash(env.payload),
    )


# --- 1.1 cancellations -------------------------------------------------------------------


_OPTION_NAMES = frozenset(CancelOptions.model_fields)


def _validate_cancel(
    env: Envelope, reply_to: str, reject: Callable[[str, str], Rejected]
) -> Accepted | Rejected:
    """A cancel's optional payload holds only the options its provider takes. Whether the
    cancelled booking exists is the worker's question (it may still be on its way in)."""
    allowed = CANCEL_OPTION_FIELDS.get(env.provider, frozenset())
    options = env.payload or {}
    unknown = [key for key in options if key not in allowed]
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no options"
        # A producer's own key is named only when it is an option name (it may hold anything).
        named = sorted({key if key in _OPTION_NAMES else "an unknown field" for key in unknown})
        return reject(
            "invalid_payload",
            f"a {env.provider} cancel takes {takes} in payload; unexpected: {', '.join(named)}",
        )
    try:
        CancelOptions.model_validate(options)
    except ValidationError as exc:
        reason = describe(exc, "payload", options, known=_OPTION_NAMES)
        return reject("invalid_payload", f"cancel payload is invalid: {reason}")
    return Accepted(
        envelope=env,
        idempotency_key=idempotency_key(env.provider, env.account, env.message_id, 0),
        reply_to=reply_to,
        # A resend is the same cancel only when it cancels the same booking with the same options.
        payload_sha256=payload_hash({"cancels": env.cancels, "payload": env.payload}),
    )
