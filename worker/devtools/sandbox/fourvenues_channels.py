"""Fourvenues channels-service simulator: POST /tickets, GET /tickets (filters qr_code,
event_id, limit, offset), GET /tickets/{id}. Errors: {"statusCode", "error", "message"}.

Sandbox assumptions (the docs are silent): the `qr_code` filter of GET /tickets; an existing
qr_code is refused with 400 "qr_code already exists" (switch accept_duplicate_qr).
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas.payloads.fourvenues_channels import ChannelTicketsRequest
from worker.devtools.sandbox.core import (
    SandboxReply,
    SandboxRequest,
    SimContext,
    assign_qr_codes,
    new_id,
    validate,
)

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


class ChannelsSim:
    name = "fourvenues_channels"
    prefix = "fourvenues-channels"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        self.codes: set[tuple[str, str]] = set()

    def error_reply(self, status: int, message: str) -> SandboxReply:
        return SandboxReply.json(
            status,
            {"statusCode": status, "error": _REASONS.get(status, "Error"), "message": message},
        )

    def handle(self, request: SandboxRequest, ctx: SimContext) -> SandboxReply:
        account = ctx.account_for(request.headers.get("x-api-key"))
        if account is None:
            return self.error_reply(401, "Invalid API key")
        path = request.path.rstrip("/")
        if path == "/tickets" and request.method == "POST":
            return self._create(request, ctx, account)
        if path == "/tickets" and request.method == "GET":
            return self._list(request, account)
        if path.startswith("/tickets/") and request.method == "GET":
            ticket = self.tickets.get(path.removeprefix("/tickets/"))
            if ticket is None or ticket["channel_id"] != account:
                return self.error_reply(404, "Ticket not found")
            return SandboxReply.json(200, {"data": ticket, "success": True})
        return self.error_reply(404, f"Cannot {request.method} {path}")

    def _list(self, request: SandboxRequest, account: str) -> SandboxReply:
        try:
            limit = int(request.query.get("limit", "50"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return self.error_reply(400, "limit and offset must be integers")
        if not 1 <= limit <= 500 or offset < 0:
            return self.error_reply(400, "limit must be 1..500 and offset >= 0")
        found = [
            t
            for t in self.tickets.values()
            if t["channel_id"] == account
            and all(
                str(t.get(name)) == request.query[name]
                for name in ("qr_code", "event_id")
                if name in request.query
            )
        ]
        return SandboxReply.json(200, {"data": found[offset : offset + limit], "success": True})

    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        try:
            body = request.json()
        except ValueError:
            return self.error_reply(400, "Invalid JSON body")
        problem = validate(ChannelTicketsRequest, body)
        if problem is not None:
            return self.error_reply(400, problem)
        codes = assign_qr_codes(
            body["tickets"],
            lambda code: (account, code) in self.codes,
            ctx.rng,
            ctx.faults.accept_duplicate_qr,
            length=10,
        )
        if codes is None:
            return self.error_reply(400, "qr_code already exists")
        rate = body["ticket_rate_id"]
        event_id = hashlib.sha256(rate.encode()).hexdigest()[:24]
        created: list[dict[str, Any]] = []
        for ticket, code in zip(body["tickets"], codes, strict=True):
            fee = ticket.get("fee") or 0
            record = {
                "_id": new_id(ctx.rng),
                "event_id": event_id,
                "ticket_rate_id": rate,
                "qr_code": code,
                "status": "active",
                "price": {
                    "_id": ticket["price_id"],
                    "name": "General",
                    "price": ticket["total_price"] - fee,
                    "fee_type": "fixed",
                    "fee_quantity": fee,
                },
                "payment_currency": "EUR",
                "channel_id": account,
                "fees": {"organization": fee},
                **{
                    k: ticket[k]
                    for k in ("full_name", "phone", "email", "birthday", "country_code")
                    if k in ticket
                },
                "supplements": ticket.get("supplements") or [],
                "for": 1,
                "enter": 0,
                "total_fees": fee,
                "total_price": ticket["total_price"],
            }
            self.tickets[record["_id"]] = record
            self.codes.add((account, code))
            created.append(record)
        ctx.tally.created(codes, "+".join(codes), len(codes))
        return SandboxReply.json(201, {"data": created, "success": True})
