"""RemyPass public API simulator, from developer.remypass.com (shared/providers/).

Served under {sandbox}/remypass/api/v1/public:
  POST /event-tickets/create-from-booking   (and its documented alias /event-tickets/issue)
  GET  /passes  (limit 1..100 default 10, page >= 1, status, memberId, includeVoid)
  GET  /passes/{id}
  POST /passes/{id}/revoke  (permanent: the pass becomes void)

Auth: `X-API-Key: KEY` or `Authorization: Bearer KEY`; missing or unknown key -> 401; a known
key without permissions -> 403. Bodies use the envelope {success, message, data}.
bookingId is unique per account; the answer to a duplicate follows the switches
duplicate_status, duplicate_message and duplicate_returns_pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.devtools.sandbox.accounts import NO_PERMISSION_KEY
from worker.devtools.sandbox.checks import Invalid, field, json_body, parse_datetime
from worker.devtools.sandbox.clock import iso_z
from worker.devtools.sandbox.core import SimContext, run_route
from worker.devtools.sandbox.ids import hex_id
from worker.devtools.sandbox.truth import IssuedTicket
from worker.devtools.sandbox.wire import Route, SandboxReply, SandboxRequest

BASE = "/api/v1/public"
DUPLICATE_MESSAGES = {
    "must_be_unique": "bookingId must be unique",
    "already_exists": "A booking with this bookingId already exists",
    "duplicate": "Duplicate bookingId",
}
_STATUSES = ("active", "inactive", "expired", "void")


class RemyPassSim:
    name = "remypass"
    prefix = "remypass"

    def __init__(self) -> None:
        self._routes = [
            Route("POST", BASE + "/event-tickets/create-from-booking", self._create),
            Route("POST", BASE + "/event-tickets/issue", self._create),
            Route("GET", BASE + "/passes", self._list),
            Route("GET", BASE + "/passes/{id}", self._get),
            Route("POST", BASE + "/passes/{id}/revoke", self._revoke),
        ]
        self.reset()

    def reset(self) -> None:
        self.passes: dict[str, dict[str, Any]] = {}  # _id -> pass instance (with "account")
        self.bookings: dict[tuple[str, str], str] = {}  # (account, bookingId) -> pass id
        self.templates: dict[tuple[str, str, str], str] = {}  # (account, film, startTime) -> id

    def routes(self, switches: Mapping[str, Any]) -> list[Route]:
        return self._routes

    def error_reply(self, status: int, message: str, switches: Mapping[str, Any]) -> SandboxReply:
        return SandboxReply.json(status, {"success": False, "message": message})

    def handle(
        self, route: Route, params: dict[str, str], request: SandboxRequest, ctx: SimContext
    ) -> SandboxReply:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if not key and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        if key == NO_PERMISSION_KEY:
            return self.error_reply(403, "The caller is not allowed to access this resource", {})
        account = ctx.account_for(key)
        if account is None:
            return self.error_reply(401, "Missing or invalid API key", {})
        return run_route(self, route, params, request, ctx, account)

    # ---- create --------------------------------------------------------------------------
    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        body = json_body(request)
        booking_id = field(body, "bookingId", "string", required=True)
        film = field(body, "film", "string", required=True)
        start = field(body, "startTime", "string", required=True)
        if parse_datetime(start) is None:
            raise Invalid('"startTime" must be an ISO 8601 date-time')
        for name in ("seat", "row", "screen"):
            field(body, name, "string", required=True)
        # The customer's sub-fields are not listed in the docs (only the example's name and
        # email): an object is required, its content is taken as it comes.
        customer = field(body, "customer", "object", required=True)
        field(body, "sendEmail", "boolean")
        existing = self.bookings.get((account, booking_id))
        if existing is not None:
            switches = ctx.switches
            out: dict[str, Any] = {
                "success": False,
                "message": DUPLICATE_MESSAGES[switches["duplicate_message"]],
            }
            if switches["duplicate_returns_pass"] == "yes":
                out["data"] = {"passInstance": _public(self.passes[existing])}
            return SandboxReply.json(int(switches["duplicate_status"]), out)
        template_key = (account, film, start)
        new_template = template_key not in self.templates
        template_id = self.templates.setdefault(template_key, hex_id(ctx.rng))
        pass_id = hex_id(ctx.rng)
        instance = {
            "_id": pass_id,
            "account": account,
            "serialNumber": hex_id(ctx.rng, 12).upper(),
            "status": "active",
            "member": None,
            "pass": template_id,
            "recipientName": customer.get("name"),
            "recipientEmail": customer.get("email"),
            "expiryDate": None,
            "issuedAt": iso_z(ctx.clock.utc()),
            "walletUrls": {
                "apple": f"https://wallet.remypass.example/apple/{pass_id}",
                "google": f"https://wallet.remypass.example/google/{pass_id}",
            },
        }
        self.passes[pass_id] = instance
        self.bookings[(account, booking_id)] = pass_id
        if body.get("sendEmail") is True:
            ctx.tally.emails_sent += 1
        ticket = IssuedTicket(pass_id, instance["serialNumber"], account, booking_id)
        ctx.tally.created([ticket], booking_id)
        data = {
            "passInstance": _public(instance),
            "eventTicket": {"_id": template_id, "name": film, "eventTime": start, "created": new_template},
        }
        return SandboxReply.json(201, {"success": True, "message": "Event ticket created", "data": data})

    # ---- passes --------------------------------------------------------------------------
    def _own(self, account: str, pass_id: str) -> dict[str, Any]:
        found = self.passes.get(pass_id)
        if found is None or found["account"] != account:
            raise Invalid("Pass not found", 404)
        return found

    def _get(self, request: SandboxRequest, ctx: SimContext, account: str, id: str) -> SandboxReply:
        found = self._own(account, id)
        return SandboxReply.json(200, {"success": True, "message": "Pass retrieved", "data": _public(found)})

    def _revoke(self, request: SandboxRequest, ctx: SimContext, account: str, id: str) -> SandboxReply:
        ctx.tally.cancel_calls[id] += 1
        found = self._own(account, id)
        # Permanent: a void pass stays void (revoking it again changes nothing).
        found["status"] = "void"
        ctx.tally.set_status(id, "voided")
        return SandboxReply.json(200, {"success": True, "message": "Pass revoked", "data": {}})

    def _list(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        q = request.query
        limit = _int_param(q, "limit", 10, 1, 100)
        page = _int_param(q, "page", 1, 1, None)
        status = q.get("status")
        if status is not None and status not in _STATUSES:
            raise Invalid(f'"status" must be one of {", ".join(_STATUSES)}')
        include_void = q.get("includeVoid", "false").lower()
        if include_void not in ("true", "false"):
            raise Invalid('"includeVoid" must be true or false')
        found = [
            p
            for p in self.passes.values()
            if p["account"] == account
            and (status is None or p["status"] == status)
            and (include_void == "true" or status == "void" or p["status"] != "void")
            and ("memberId" not in q or p["member"] == q["memberId"])
        ]
        if ctx.switches["passes_order"] == "newest_first":
            found.reverse()
        total = len(found)
        pages = (total + limit - 1) // limit
        chunk = found[(page - 1) * limit : page * limit]
        return SandboxReply.json(
            200,
            {
                "success": True,
                "message": "Passes retrieved",
                "data": [_public(p) for p in chunk],
                "pagination": {
                    "currentPage": page,
                    "totalPages": pages,
                    "totalItems": total,
                    "itemsPerPage": limit,
                    "hasNextPage": page < pages,
                    "hasPrevPage": page > 1,
                },
            },
        )


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f'"{name}" must be an integer') from None
    if value < low or (high is not None and value > high):
        raise Invalid(f'"{name}" must be between {low} and {high}' if high else f'"{name}" must be >= {low}')
    return value


def _public(instance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if k != "account"}
