"""e-guma simulator: POST /v1/ticketing/booking.json?apikey=KEY with the Idempotency-Key
store, GET /v1/ticketing/orders.json.

Idempotency (keys per merchant and endpoint): no key -> 400; same key + same body -> the
stored status and body again, with `Idempotent-Replayed: true`; same key + different body ->
422; same key while the first request still runs -> 409. Only successful bookings are
stored: a refused request frees its key (the 72 h expiry is not simulated). Errors are JSON
{"error": code, "message": text}; 401 and injected 5xx are plain text like the general docs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from schemas.payloads.eguma import EgumaBooking
from worker.devtools.sandbox.core import SandboxReply, SandboxRequest, SimContext, validate

BASE = "/v1"
REPLAY_HEADER = "Idempotent-Replayed"
_CODES = {400: "validation_error", 404: "not_found", 409: "conflict", 422: "idempotency_error"}


@dataclass
class _Key:
    fingerprint: str
    reply: SandboxReply
    done: bool = False


class EgumaSim:
    name = "eguma"
    prefix = "eguma"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys: dict[tuple[str, str, str], _Key] = {}  # (merchant, endpoint, key)
        self.orders: list[dict[str, Any]] = []

    def error_reply(self, status: int, message: str) -> SandboxReply:
        if status in _CODES:
            return SandboxReply.json(status, {"error": _CODES[status], "message": message})
        return SandboxReply.text(status, message)

    def handle(self, request: SandboxRequest, ctx: SimContext) -> SandboxReply:
        account = ctx.account_for(request.query.get("apikey"))
        if account is None:
            return SandboxReply.text(401, "Unauthorized: missing or invalid API key")
        path = request.path.removeprefix(BASE)
        if request.method == "POST" and path == "/ticketing/booking.json":
            return self._book(request, ctx, account)
        if request.method == "GET" and path == "/ticketing/orders.json":
            return self._orders(request, account)
        return self.error_reply(404, "Resource not found")

    def _book(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        key = (request.headers.get("idempotency-key") or "").strip()
        if not key:
            return self.error_reply(400, "The Idempotency-Key header is required")
        try:
            body: Any = request.json()
            fingerprint = hashlib.sha256(
                json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        except ValueError:
            body, fingerprint = None, hashlib.sha256(request.body).hexdigest()
        slot = (account, "booking", key)
        stored = self.keys.get(slot)
        if stored is not None:
            if not stored.done:
                return self.error_reply(409, "A request with this Idempotency-Key is still being processed")
            if stored.fingerprint != fingerprint:
                return self.error_reply(
                    422, "This Idempotency-Key was already used with a different request body"
                )
            replay = stored.reply
            return SandboxReply(replay.status, replay.body, {**replay.headers, REPLAY_HEADER: "true"})
        if body is None:
            return self.error_reply(400, "The request body is not valid JSON")
        problem = validate(EgumaBooking, body)
        if problem is not None:
            return self.error_reply(400, problem)
        booking_id = str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
        tickets = [
            {"ticket_number": str(ctx.rng.randrange(10**18, 10**19)), "category_id": item["category_id"]}
            for item in body["items"]
            for _ in range(item["quantity"])
        ]
        order = {
            "booking_id": booking_id,
            "booking_reference": f"T{10015 + len(self.orders)}",
            "tickets": tickets,
        }
        self.orders.append({**order, "account": account, "last_name": body["customer"]["last_name"]})
        ctx.tally.created([key], key, len(tickets))
        reply = SandboxReply.json(201, order)
        record = _Key(fingerprint, reply)
        self.keys[slot] = record

        def complete() -> None:
            record.done = True

        reply.on_sent = complete
        return reply

    def _orders(self, request: SandboxRequest, account: str) -> SandboxReply:
        found = [
            {k: v for k, v in order.items() if k not in ("account", "last_name")}
            for order in self.orders
            if order["account"] == account
            and request.query.get("order_number", order["booking_reference"]) == order["booking_reference"]
            and request.query.get("last_name", order["last_name"]) == order["last_name"]
        ]
        return SandboxReply.json(200, {"orders": found})
