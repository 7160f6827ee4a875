"""Fourvenues channels-service (Channel Manager API) simulator, from
docs.fourvenues.com/channel-manager (shared/providers/).

Served under {sandbox}/fourvenues-channels:
  GET  /auth                 the key's channel
  POST /tickets              create tickets: {data: [ticket, ...], success: true}
  GET  /tickets              list (filter names undocumented: switch list_filters)
  PUT  /tickets/{id}/refund  body {amount}: the first call voids; repeatable until fully
                             refunded; beyond the total -> 400

Auth: `X-Api-Key` (channel-scoped). Errors carry `message` (switch error_body). A sent
qr_code is the ticket's qr_code (the docs' example echoes it), one is generated when absent;
whether a repeated one is refused is the switch duplicate_qr. Fields the rate's settings
require (full_name, email, phone ...) are per rate (catalogue.py). An unknown route answers 404
with an HTML page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from worker.devtools.sandbox.catalogue import CHANNEL_RATES, Rate
from worker.devtools.sandbox.checks import Invalid, field, is_date, json_body, type_ok
from worker.devtools.sandbox.clock import iso_z
from worker.devtools.sandbox.core import SimContext, run_route
from worker.devtools.sandbox.ids import hex_id, short_code
from worker.devtools.sandbox.qr import DUPLICATE_QR_MESSAGES, ticket_count
from worker.devtools.sandbox.truth import IssuedTicket
from worker.devtools.sandbox.wire import Route, SandboxReply, SandboxRequest

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
}
_DOCUMENT_TYPES = ("dni", "nie", "passport", "other")
_TEXT_FIELDS = (
    "price_id",
    "qr_code",
    "full_name",
    "phone",
    "email",
    "address",
    "postal_code",
    "country_code",
)
_LIST_FILTERS = ("qr_code", "event_id", "ticket_rate_id", "status")


def channel_id(account: str) -> str:
    return hashlib.sha256(f"channel:{account}".encode()).hexdigest()[:24]


class ChannelsSim:
    name = "fourvenues_channels"
    prefix = "fourvenues-channels"

    def __init__(self) -> None:
        self._routes = [
            Route("GET", "/auth", self._auth),
            Route("POST", "/tickets", self._create),
            Route("GET", "/tickets", self._list),
            Route("PUT", "/tickets/{id}/refund", self._refund),
        ]
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}  # _id -> ticket (with "account")
        self.codes: set[tuple[str, str]] = set()

    def routes(self, switches: Mapping[str, Any]) -> list[Route]:
        return self._routes

    def error_reply(self, status: int, message: str, switches: Mapping[str, Any]) -> SandboxReply:
        if switches.get("error_body") == "boom":
            body = {"statusCode": status, "error": _REASONS.get(status, "Error"), "message": message}
            return SandboxReply.json(status, body)
        return SandboxReply.json(status, {"success": False, "message": message})

    def handle(
        self, route: Route, params: dict[str, str], request: SandboxRequest, ctx: SimContext
    ) -> SandboxReply:
        account = ctx.account_for(request.headers.get("x-api-key"))
        if account is None:
            return self.error_reply(401, "Invalid API key", ctx.switches)
        return run_route(self, route, params, request, ctx, account)

    def _auth(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        channel = {"_id": channel_id(account), "name": f"Sandbox {account}", "slug": f"sandbox-{account}"}
        hosts = [{"_id": hex_id(ctx.rng), "name": "Sandbox venue", "slug": "sandbox-venue"}]
        return SandboxReply.json(
            200, {"success": True, "data": {"message": "Authed", "channel": {**channel, "hosts": hosts}}}
        )

    # ---- create --------------------------------------------------------------------------
    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        body = json_body(request)
        quantity = field(body, "quantity", "integer")
        rate_id = field(body, "ticket_rate_id", "string", required=True)
        tickets = field(body, "tickets", "array", required=True)
        if not tickets:
            raise Invalid('"tickets" must contain at least 1 items')
        rate = CHANNEL_RATES.get(rate_id)
        if rate is None:
            raise Invalid("Ticket rate not found", 404)
        for i, ticket in enumerate(tickets):
            _check_ticket(ticket, f"tickets[{i}].", rate)
        count = ticket_count(quantity, len(tickets), ctx.switches["quantity_rule"])
        sent = [t.get("qr_code") for t in tickets[: count.n]] + [None] * count.generated
        if ctx.switches["duplicate_qr"] == "refuse":
            wanted = [c for c in sent if c is not None]
            if len(set(wanted)) < len(wanted) or any((account, c) in self.codes for c in wanted):
                raise Invalid(DUPLICATE_QR_MESSAGES[ctx.switches["duplicate_qr_message"]])
        created: list[dict[str, Any]] = []
        issued: list[IssuedTicket] = []
        for i, qr in enumerate(sent):
            source = tickets[min(i, len(tickets) - 1)]
            code = qr if qr is not None else self._fresh_code(account, ctx)
            record = _ticket(source, rate, hex_id(ctx.rng), code, channel_id(account))
            record["account"] = account
            self.tickets[record["_id"]] = record
            self.codes.add((account, code))
            created.append(_public(record))
            issued.append(IssuedTicket(record["_id"], code, account, code))
        ctx.tally.created(issued, "+".join(t.identity for t in issued))
        return SandboxReply.json(int(ctx.switches["create_status"]), {"data": created, "success": True})

    def _fresh_code(self, account: str, ctx: SimContext) -> str:
        code = short_code(ctx.rng, 10)
        while (account, code) in self.codes:
            code = short_code(ctx.rng, 10)
        return code

    # ---- list ----------------------------------------------------------------------------
    def _list(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        found = [_public(t) for t in self.tickets.values() if t["account"] == account]
        if ctx.switches["list_filters"] == "applied":
            q = request.query
            found = [t for t in found if all(str(t.get(n)) == q[n] for n in _LIST_FILTERS if n in q)]
            try:
                offset = int(q.get("offset", "0"))
                limit = int(q["limit"]) if "limit" in q else None
            except ValueError:
                raise Invalid('"limit" and "offset" must be numbers') from None
            found = found[offset:] if limit is None else found[offset : offset + limit]
        return SandboxReply.json(200, {"data": found, "success": True})

    # ---- refund --------------------------------------------------------------------------
    def _refund(self, request: SandboxRequest, ctx: SimContext, account: str, id: str) -> SandboxReply:
        ctx.tally.cancel_calls[id] += 1
        ticket = self.tickets.get(id)
        if ticket is None or ticket["account"] != account:
            raise Invalid("Ticket not found", 404)
        body = json_body(request)
        amount = field(body, "amount", "number", required=True)
        if amount <= 0:
            raise Invalid('"amount" must be greater than 0')
        if ticket["refunded"] + amount > ticket["total_price"] + 1e-9:
            left = ticket["total_price"] - ticket["refunded"]
            raise Invalid(f"Refund amount exceeds the amount left to refund ({left:g})")
        now = iso_z(ctx.clock.utc())
        ticket["refunded"] += amount
        ticket["refunded_at"] = now
        ticket["refunds"].append({"channel_id": ticket["channel_id"], "amount": amount, "at": now})
        ticket["status"] = "voided"
        ctx.tally.set_status(id, "voided")
        return SandboxReply.json(200, {"data": _public(ticket), "success": True})


def _check_ticket(ticket: Any, where: str, rate: Rate) -> None:
    if not isinstance(ticket, dict):
        raise Invalid(f'"{where[:-1]}" must be an object')
    for name in _TEXT_FIELDS:
        field(ticket, name, "string", where, required=name in rate.required)
    field(ticket, "total_price", "number", where)
    field(ticket, "fee", "number", where)
    gender = ticket.get("gender")
    if gender is not None and gender not in (0, 1, "0", "1"):
        raise Invalid(f'"{where}gender" must be one of [0, 1]')
    birthday = field(ticket, "birthday", "string", where)
    if birthday is not None and not is_date(birthday):
        raise Invalid(f'"{where}birthday" must be a date YYYY-MM-DD')
    doc_type = field(ticket, "personal_document_type", "string", where)
    if doc_type is not None and doc_type not in _DOCUMENT_TYPES:
        raise Invalid(f'"{where}personal_document_type" must be one of [{", ".join(_DOCUMENT_TYPES)}]')
    field(ticket, "personal_document_number", "string", where)
    warranty = field(ticket, "warranty", "object", where)
    if warranty is not None:
        field(warranty, "enabled", "boolean", f"{where}warranty.")
        field(warranty, "hours", "integer", f"{where}warranty.")
    for list_name, parts in (
        ("answers", (("question_id", "string"), ("answer", "string"))),
        ("supplements", (("supplement_id", "string"), ("price", "number"))),
    ):
        items = field(ticket, list_name, "array", where) or []
        for j, item in enumerate(items):
            label = f"{where}{list_name}[{j}]"
            if not isinstance(item, dict):
                raise Invalid(f'"{label}" must be an object')
            for name, kind in parts:
                if item.get(name) is not None and not type_ok(item[name], kind):
                    raise Invalid(f'"{label}.{name}" must be a {kind}')


def _ticket(source: dict[str, Any], rate: Rate, ticket_id: str, code: str, channel: str) -> dict[str, Any]:
    total = source.get("total_price") or 0
    fee = source.get("fee") or 0
    supplements = source.get("supplements") or []
    gender = source.get("gender")
    warranty = source.get("warranty") or {}
    return {
        "_id": ticket_id,
        "event_id": rate.event_id,
        "ticket_rate_id": rate.id,
        "qr_code": code,
        "status": "active",
        "price": {
            "_id": source.get("price_id"),
            "name": rate.name,
            "price": total - fee,
            "valid_until": None,
            "quantity": 0,
            "fee_type": "fixed",
            "fee_quantity": fee,
            "includes": "",
            "additional_info": "",
        },
        "payment_currency": "EUR",
        "channel_id": channel,
        "fees": {"organization": fee, "discocil": 0},
        **{
            k: source.get(k)
            for k in (
                "full_name",
                "phone",
                "email",
                "birthday",
                "address",
                "postal_code",
                "country_code",
                "personal_document_type",
                "personal_document_number",
            )
        },
        "gender": int(gender) if gender is not None else None,
        "answers": source.get("answers") or [],
        "supplements": supplements,
        "refunded": 0,
        "refunded_at": None,
        "refunds": [],
        "for": 1,
        "enter": 0,
        "entry_time": None,
        "total_supplements": sum(s.get("price") or 0 for s in supplements),
        "total_fees": fee,
        "total_price": total,
        "warranty": {"total": 0, "hours": warranty.get("hours", 0)},
    }


def _public(ticket: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ticket.items() if k != "account"}
