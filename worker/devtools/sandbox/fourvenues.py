"""Fourvenues Integrations API simulator, from docs.fourvenues.com/integrations (shared/providers/).

Served under {sandbox}/fourvenues (the host); every path lives under /integrations/:
  POST /integrations/tickets/                    create tickets
  GET  /integrations/tickets/by-code/{code}      (switch lookup_paths: by-code, code or both)
  GET  /integrations/tickets/code/{code}
  GET  /integrations/tickets/{id}
  GET  /integrations/tickets/?event_id=...       limit <= 500, offset, [] past the end
  POST /integrations/tickets/refund/{id}         body {amount}

Auth: v2 `x-api-key`, or v1 `integration_id` + `secret` (either suffices). Errors:
{"success": false, "error"|"message": text} (switch error_key). An unknown route answers 404
with an HTML page, never the JSON "not found" of a lookup. Documented rules: email and
full_name on every ticket, every ticket on the same price_id, channel_id or referral_id but
not both; no rate, channel or other limits are checked. Idempotency: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.devtools.sandbox.accounts import FOURVENUES_V1, NO_PERMISSION_KEY
from worker.devtools.sandbox.catalogue import INTEGRATIONS_RATES
from worker.devtools.sandbox.checks import Invalid, field, is_date, json_body, parse_datetime
from worker.devtools.sandbox.clock import iso_z
from worker.devtools.sandbox.core import SimContext, run_route
from worker.devtools.sandbox.ids import mixed_id, short_code
from worker.devtools.sandbox.qr import DUPLICATE_QR_MESSAGES, TicketCount, ticket_count
from worker.devtools.sandbox.truth import IssuedTicket
from worker.devtools.sandbox.wire import Route, SandboxReply, SandboxRequest

BASE = "/integrations/tickets"
_TEXT_FIELDS = (
    "qr_code",
    "phone",
    "gender",
    "address",
    "country_code",
    "postal_code",
    "personal_document_type",
    "personal_document_number",
)


class FourvenuesSim:
    name = "fourvenues"
    prefix = "fourvenues"

    def __init__(self) -> None:
        self._routes: dict[str, list[Route]] = {}  # per position of the switch lookup_paths
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}  # _id -> ticket (with "account")
        self.by_code: dict[tuple[str, str], list[str]] = {}  # (account, code) -> ids, oldest first

    def routes(self, switches: Mapping[str, Any]) -> list[Route]:
        paths = switches["lookup_paths"]
        if paths not in self._routes:
            routes = [Route("POST", BASE + "/", self._create), Route("GET", BASE + "/", self._list)]
            if paths in ("by-code", "both"):
                routes.append(Route("GET", BASE + "/by-code/{code}", self._by_code))
            if paths in ("code", "both"):
                routes.append(Route("GET", BASE + "/code/{code}", self._by_code))
            routes += [
                Route("GET", BASE + "/{id}", self._get),
                Route("POST", BASE + "/refund/{id}", self._refund),
            ]
            self._routes[paths] = routes
        return self._routes[paths]

    def error_reply(self, status: int, message: str, switches: Mapping[str, Any]) -> SandboxReply:
        return SandboxReply.json(status, {"success": False, switches.get("error_key", "error"): message})

    def handle(
        self, route: Route, params: dict[str, str], request: SandboxRequest, ctx: SimContext
    ) -> SandboxReply:
        key = request.headers.get("x-api-key")
        if key == NO_PERMISSION_KEY:
            return self.error_reply(403, "Forbidden: the key has no access to this resource", ctx.switches)
        account = ctx.account_for(key)
        pair = (request.headers.get("integration_id"), request.headers.get("secret"))
        if account is None and pair == FOURVENUES_V1 and ctx.switches["auth_v1"] == "accepted":
            account = "default"
        if account is None:
            return self.error_reply(401, "Unauthorized", ctx.switches)
        return run_route(self, route, params, request, ctx, account)

    # ---- create --------------------------------------------------------------------------
    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        body = json_body(request)
        quantity = field(body, "quantity", "integer")
        rate_id = field(body, "ticket_rate_id", "string", required=True)
        sale_type = field(body, "sale_type", "string")
        if sale_type is not None and sale_type != "online":
            raise Invalid('"sale_type" must be one of [online]')
        channel_id = field(body, "channel_id", "string")
        referral_id = field(body, "referral_id", "string")
        if channel_id is not None and referral_id is not None:
            raise Invalid("ReferralId or ChannelId can be passed but not both")
        tickets = field(body, "tickets", "array", required=True)
        if not tickets:
            raise Invalid('"tickets" must contain at least 1 item')
        for i, ticket in enumerate(tickets):
            _check_ticket(ticket, f"tickets[{i}].")
        if len({t.get("price_id") for t in tickets}) > 1:
            raise Invalid("All tickets must have the same rate and priceId")
        rate = INTEGRATIONS_RATES.get(rate_id)
        if rate is None:
            raise Invalid("Ticket rate not found", 404)
        count: TicketCount = ticket_count(quantity, len(tickets), ctx.switches["quantity_rule"])
        sent = [t.get("qr_code") for t in tickets[: count.n]] + [None] * count.generated
        keep = ctx.switches["sent_qr_code"] == "becomes_code"
        if keep and ctx.switches["duplicate_qr"] == "refuse":
            wanted = [c for c in sent if c is not None]
            if len(set(wanted)) < len(wanted) or any((account, c) in self.by_code for c in wanted):
                raise Invalid(DUPLICATE_QR_MESSAGES[ctx.switches["duplicate_qr_message"]])
        now = iso_z(ctx.clock.utc())
        payment_id = mixed_id(ctx.rng)
        created: list[dict[str, Any]] = []
        issued: list[IssuedTicket] = []
        for i, qr in enumerate(sent):
            source = tickets[min(i, len(tickets) - 1)]
            code = qr if keep and qr is not None else self._fresh_code(account, ctx)
            record = _ticket(source, body, rate, mixed_id(ctx.rng), code, payment_id, now)
            record["account"] = account
            self.tickets[record["_id"]] = record
            self.by_code.setdefault((account, code), []).append(record["_id"])
            created.append(_public(record))
            issued.append(IssuedTicket(record["_id"], code, account, qr if qr is not None else code))
        ctx.tally.created(issued, "+".join(t.identity for t in issued))
        shape = ctx.switches["data_shape"]
        many = shape == "list" or (shape == "list_when_many" and len(created) > 1)
        data: Any = created if many else created[0]
        return SandboxReply.json(int(ctx.switches["create_status"]), {"success": True, "data": data})

    def _fresh_code(self, account: str, ctx: SimContext) -> str:
        code = short_code(ctx.rng)
        while (account, code) in self.by_code:
            code = short_code(ctx.rng)
        return code

    # ---- lookups -------------------------------------------------------------------------
    def _by_code(self, request: SandboxRequest, ctx: SimContext, account: str, code: str) -> SandboxReply:
        ids = self.by_code.get((account, code))
        if not ids:
            raise Invalid("Ticket not found", 404)
        return SandboxReply.json(200, {"success": True, "data": _public(self.tickets[ids[0]])})

    def _own(self, account: str, ticket_id: str) -> dict[str, Any]:
        found = self.tickets.get(ticket_id)
        if found is None or found["account"] != account:
            raise Invalid("Ticket not found", 404)
        return found

    def _get(self, request: SandboxRequest, ctx: SimContext, account: str, id: str) -> SandboxReply:
        return SandboxReply.json(200, {"success": True, "data": _public(self._own(account, id))})

    def _list(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        q = request.query
        event_id = q.get("event_id")
        if not event_id:
            raise Invalid("event_id is required")
        limit = _int(q, "limit", 500)
        offset = _int(q, "offset", 0)
        if not 1 <= limit <= 500:
            raise Invalid('"limit" must be less than or equal to 500')
        if offset < 0:
            raise Invalid('"offset" must be greater than or equal to 0')
        date_field = q.get("date_field", "created_at")
        if date_field not in ("created_at", "updated_at"):
            raise Invalid('"date_field" must be one of [created_at, updated_at]')
        start, end = _moment(q, "start_date"), _moment(q, "end_date")
        found = [
            _public(t)
            for t in self.tickets.values()
            if t["account"] == account
            and t["event_id"] == event_id
            and (start is None or _parse(t[date_field]) >= start)
            and (end is None or _parse(t[date_field]) <= end)
        ]
        return SandboxReply.json(200, {"success": True, "data": found[offset : offset + limit]})

    # ---- refund --------------------------------------------------------------------------
    def _refund(self, request: SandboxRequest, ctx: SimContext, account: str, id: str) -> SandboxReply:
        ctx.tally.cancel_calls[id] += 1
        ticket = self._own(account, id)
        body = json_body(request)
        amount = field(body, "amount", "number", required=True)
        if amount <= 0:
            raise Invalid('"amount" must be greater than 0')
        ticket["refunded"] = ticket["refunded"] + amount
        ticket["updated_at"] = iso_z(ctx.clock.utc())
        if ctx.switches["refund_status"] == "cancelled":
            ticket["status"] = "cancelled"
            ctx.tally.set_status(id, "cancelled")
        else:
            ctx.tally.set_status(id, "refunded")
        return SandboxReply.json(200, {"success": True})


def _check_ticket(ticket: Any, where: str) -> None:
    if not isinstance(ticket, dict):
        raise Invalid(f'"{where[:-1]}" must be an object')
    field(ticket, "full_name", "string", where, required=True)
    field(ticket, "email", "string", where, required=True)
    field(ticket, "price_id", "string", where)
    field(ticket, "total_price", "number", where)
    field(ticket, "fee", "number", where)
    for name in _TEXT_FIELDS:
        field(ticket, name, "string", where)
    birthday = field(ticket, "birthday", "string", where)
    if birthday is not None and not is_date(birthday):
        raise Invalid(f'"{where}birthday" must be a date YYYY-MM-DD')
    supplements = field(ticket, "supplements", "array", where) or []
    for j, sup in enumerate(supplements):
        label = f"{where}supplements[{j}]."
        if not isinstance(sup, dict):
            raise Invalid(f'"{label[:-1]}" must be an object')
        field(sup, "supplement_id", "string", label)
        field(sup, "price", "number", label)


def _ticket(
    source: dict[str, Any],
    body: dict[str, Any],
    rate: Any,
    ticket_id: str,
    code: str,
    payment_id: str,
    now: str,
) -> dict[str, Any]:
    total = source.get("total_price") or 0
    fee = source.get("fee") or 0
    supplements = [
        {
            "_id": s.get("supplement_id"),
            "price": s.get("price") or 0,
            "label": "Supplement",
            "product_quantity": 1,
            "product_quantity_used": 0,
        }
        for s in source.get("supplements") or []
    ]
    extras = sum(s["price"] for s in supplements)
    return {
        "_id": ticket_id,
        "activation_date": now,
        "channel_id": body.get("channel_id"),
        "referral_id": body.get("referral_id"),
        "code": code,
        "discount_quantity_subtract": 0,
        "email": source["email"],
        "name": source["full_name"],
        "phone": source.get("phone"),
        "gender": source.get("gender"),
        "address": source.get("address"),
        "country": source.get("country_code"),
        "postal_code": source.get("postal_code"),
        "language": "es",
        "enter": 0,
        "entry_date": 0,
        "event_id": rate.event_id,
        "for": 1,
        "payment_id": payment_id,
        "price": total - fee,
        "raised": 0,
        "rate_id": rate.id,
        "rate_name": rate.name,
        "rate_slug": rate.slug,
        "refunded": 0,
        "sale_type": body.get("sale_type") or "online",
        "price_info": {
            "_id": source.get("price_id"),
            "price": total - fee,
            "age": 18,
            "content": "",
            "additional_info": "",
        },
        "supplements": supplements,
        "status": "activated",
        "total_extras": extras,
        "total_fees": fee,
        "total_paid": total + extras,
        "created_at": now,
        "updated_at": now,
    }


def _public(ticket: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ticket.items() if k != "account"}


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f'"{name}" must be a number') from None


def _moment(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    moment = parse_datetime(raw) if "T" in raw else parse_datetime(raw + "T00:00:00Z")
    if moment is None:
        raise Invalid(f'"{name}" must be an ISO 8601 date')
    return _aware(moment)


def _parse(stamp: str) -> datetime:
    moment = parse_datetime(stamp)
    assert moment is not None
    return _aware(moment)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
