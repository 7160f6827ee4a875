"""Ticket codes (qr_code) for the Fourvenues APIs, which have no idempotency of their own.

The code is the only handle that lets a repeated attempt be matched to tickets an earlier one
created, so every ticket of a booking carries a stable code on every attempt. It is also what
the door scans, so it must not be computable by anyone else:

- new rows: random codes (`secrets`), generated once and stored in the row by the claim that
  counts its first attempt; every later attempt and every worker reuses exactly those;
- rows already in flight before codes were stored (attempts > 0, nothing stored) keep the old
  derivation sha256(key:index), so their retries still match what an earlier attempt may have
  created. No new code is ever generated for a row that has already sent any.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

CODE_PREFIX = "TR"
_CODE_CHARS = 14  # base32: 70 random bits after the prefix, 16 characters in all


def new_qr_code() -> str:
    """A random code: "TR" + 14 base32 characters (A-Z, 2-7), the shape of the derived ones."""
    return CODE_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode("ascii")[:_CODE_CHARS]


def initial_codes(payload: dict[str, Any] | None) -> list[str | None] | None:
    """The codes to store before a row's first call: a random one for every ticket the
    producer sent without a qr_code, None where the producer gave one. None when the payload
    holds no ticket list (nothing to store)."""
    tickets = (payload or {}).get("tickets")
    if not isinstance(tickets, list) or not tickets:
        return None
    return [None if isinstance(t, dict) and t.get("qr_code") else new_qr_code() for t in tickets]


def derive_qr_code(idempotency_key: str, index: int) -> str:
    """The old derivation, kept only for rows already in flight without stored codes: "TR" +
    14 base32 characters of sha256("{key}:{index}"). Computable by anyone who knows the key,
    so never used for a row that had not sent anything yet."""
    digest = hashlib.sha256(f"{idempotency_key}:{index}".encode()).digest()
    return CODE_PREFIX + base64.b32encode(digest).decode("ascii").rstrip("=")[:_CODE_CHARS]


def with_codes(
    payload: dict[str, Any], idempotency_key: str, stored: Sequence[str | None] | None
) -> dict[str, Any]:
    """A copy of a Fourvenues payload where every ticket without a qr_code gets its code: the
    stored one, or (a row in flight from before stored codes) the derived one."""
    body = copy.deepcopy(payload)
    tickets = body.get("tickets")
    if isinstance(tickets, list):
        for index, ticket in enumerate(tickets):
            if isinstance(ticket, dict) and not ticket.get("qr_code"):
                code = stored[index] if stored is not None and index < len(stored) else None
                ticket["qr_code"] = code or derive_qr_code(idempotency_key, index)
    return body


def with_derived_qr_codes(payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """with_codes for a row without stored codes."""
    return with_codes(payload, idempotency_key, None)


def sent_codes(body: dict[str, Any]) -> list[str]:
    """The qr_codes of a prepared body, in ticket order."""
    tickets = body.get("tickets")
    if not isinstance(tickets, list):
        return []
    return [str(t["qr_code"]) for t in tickets if isinstance(t, dict) and t.get("qr_code")]
