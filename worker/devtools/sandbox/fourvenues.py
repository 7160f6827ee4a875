"""Fourvenues Integrations API simulator: POST /integrations/tickets/, GET /tickets/by-code/{code}
(also /tickets/code/{code}), GET /tickets/{id}. Errors: 400 {"success": false, "error": "..."}.

Sandbox assumptions (the docs are silent): a sent qr_code becomes the ticket's `code`; an
existing qr_code is refused with 400 {"error": "qr_code already exists"} (switch
accept_duplicate_qr for the worst case); `data` is one object for one ticket, a list for more.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.payloads.fourvenues import FourvenuesTicketsRequest
from worker.devtools.sandbox.core import (
    FOURVENUES_V1,
    SandboxReply,
    SandboxRequest,
    SimContext,
    assign_qr_codes,
    new_id,
    validate,
)


class FourvenuesSim:
    name = "fourvenues"
    prefix = "fourvenues"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}  # _id -> ticket (with "account")
        self.by_code: dict[tuple[str, str], list[str]] = {}  # (account, code) -> ids

    def error_reply(self, status: int, message: str) -> SandboxReply:
        return SandboxReply.json(status, {"success": False, "error": message})

    def _account(self, request: SandboxRequest, ctx: SimContext) -> str | None:
        account = ctx.account_for(request.headers.get("x-api-key"))
        if account is not None:
            return account
        pair = (request.headers.get("integration_id"), request.headers.get("secret"))
        return "default" if pair == FOURVENUES_V1 else None

    def handle(self, request: SandboxRequest, ctx: SimContext) -> SandboxReply:
        account = self._account(request, ctx)
        if account is None:
            return self.error_reply(401, "Unauthorized")
        path = request.path.rstrip("/")
        if request.method == "POST" and path == "/integrations/tickets":
            return self._create(request, ctx, account)
        if request.method == "GET":
            for prefix in ("/tickets/by-code/", "/tickets/code/"):
                if path.startswith(prefix):
                    ids = self.by_code.get((account, path.removeprefix(prefix)), [])
                    if not ids:
                        return self.error_reply(404, "Ticket not found")
                    return SandboxReply.json(200, {"success": True, "data": self._public(ids[0])})
            if path.startswith("/tickets/"):
                ticket = self.tickets.get(path.removeprefix("/tickets/"))
                if ticket is None or ticket["account"] != account:
                    return self.error_reply(404, "Ticket not found")
                return SandboxReply.json(200, {"success": True, "data": self._public(ticket["_id"])})
        return self.error_reply(404, "Not found")

    def _public(self, ticket_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.tickets[ticket_id].items() if k != "account"}

    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        try:
            body = request.json()
        except ValueError:
            return self.error_reply(400, "Invalid JSON body")
        problem = validate(FourvenuesTicketsRequest, body)
        if problem is not None:
            return self.error_reply(400, problem)
        codes = assign_qr_codes(
            body["tickets"],
            lambda code: (account, code) in self.by_code,
            ctx.rng,
            ctx.faults.accept_duplicate_qr,
        )
        if codes is None:
            return self.error_reply(400, "qr_code already exists")
        payment_id = new_id(ctx.rng, 32)
        event_id = new_id(ctx.rng, 32)
        created: list[dict[str, Any]] = []
        for ticket, code in zip(body["tickets"], codes, strict=True):
            ticket_id = new_id(ctx.rng, 32)
            record = {
                "_id": ticket_id,
                "account": account,
                "activation_date": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "channel_id": body.get("channel_id"),
                "referral_id": body.get("referral_id"),
                "code": code,
                "email": ticket["email"],
                "name": ticket["full_name"],
                "phone": ticket.get("phone"),
                "event_id": event_id,
                "payment_id": payment_id,
                "for": 1,
                "enter": 0,
                "price": ticket["total_price"] - (ticket.get("fee") or 0),
                "rate_id": body["ticket_rate_id"],
                "rate_name": "General Access",
                "sale_type": body.get("sale_type", "online"),
                "price_info": {"_id": ticket["price_id"], "price": ticket["total_price"]},
                "supplements": ticket.get("supplements") or [],
                "status": "activated",
                "total_fees": ticket.get("fee") or 0,
                "total_paid": ticket["total_price"],
            }
            self.tickets[ticket_id] = record
            self.by_code.setdefault((account, code), []).append(ticket_id)
            created.append(self._public(ticket_id))
        ctx.tally.created(codes, "+".join(codes), len(codes))
        data: Any = created[0] if len(created) == 1 else created
        return SandboxReply.json(200, {"success": True, "data": data})
