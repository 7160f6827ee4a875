"""RemyPass simulator: POST /api/v1/public/event-tickets/create-from-booking (and its alias
/event-tickets/issue), GET /passes/{id}. Bodies use the envelope {success, message, data}."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.payloads.remypass import RemyPassBooking
from worker.devtools.sandbox.core import (
    NO_PERMISSION_KEY,
    SandboxReply,
    SandboxRequest,
    SimContext,
    new_id,
    validate,
)

BASE = "/api/v1/public"
DUPLICATE_MESSAGE = "Duplicate booking: bookingId already exists"


class RemyPassSim:
    name = "remypass"
    prefix = "remypass"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.passes: dict[str, dict[str, Any]] = {}
        self.bookings: dict[tuple[str, str], str] = {}  # (account, bookingId) -> pass id
        self.templates: dict[tuple[str, str, str], str] = {}
        self.emails_sent = 0

    def error_reply(self, status: int, message: str) -> SandboxReply:
        return SandboxReply.json(status, {"success": False, "message": message})

    def handle(self, request: SandboxRequest, ctx: SimContext) -> SandboxReply:
        if not request.path.startswith(BASE + "/"):
            return self.error_reply(404, "Route not found")
        path = request.path[len(BASE) :].rstrip("/")
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if key == NO_PERMISSION_KEY:
            return self.error_reply(403, "API key lacks the passes:issue permission")
        account = ctx.account_for(key)
        if account is None:
            return self.error_reply(401, "Missing or invalid API key")
        if request.method == "POST" and path in (
            "/event-tickets/create-from-booking",
            "/event-tickets/issue",
        ):
            return self._create(request, ctx, account)
        if request.method == "GET" and path.startswith("/passes/"):
            found = self.passes.get(path.removeprefix("/passes/"))
            if found is None or found["account"] != account:
                return self.error_reply(404, "Pass not found")
            return SandboxReply.json(200, {"success": True, "message": "OK", "data": _public(found)})
        return self.error_reply(404, "Route not found")

    def _create(self, request: SandboxRequest, ctx: SimContext, account: str) -> SandboxReply:
        try:
            body = request.json()
        except ValueError:
            return self.error_reply(400, "Invalid JSON body")
        problem = validate(RemyPassBooking, body)
        if problem is not None:
            return self.error_reply(400, f"Validation error: {problem}")
        booking_id = body["bookingId"]
        if (account, booking_id) in self.bookings:
            return self.error_reply(400, DUPLICATE_MESSAGE)
        template_key = (account, body["film"], body["startTime"])
        template_id = self.templates.setdefault(template_key, new_id(ctx.rng))
        pass_id = new_id(ctx.rng)
        customer = body["customer"]
        instance = {
            "_id": pass_id,
            "account": account,
            "serialNumber": f"RP-{new_id(ctx.rng, 12).upper()}",
            "status": "active",
            "recipientName": customer["name"],
            "recipientEmail": customer["email"],
            "issuedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "walletUrls": {
                "apple": f"https://wallet.remypass.example/apple/{pass_id}",
                "google": f"https://wallet.remypass.example/google/{pass_id}",
            },
            "pass": template_id,
            "member": None,
        }
        self.passes[pass_id] = instance
        self.bookings[(account, booking_id)] = pass_id
        if body.get("sendEmail"):
            self.emails_sent += 1
        ctx.tally.created([booking_id], booking_id, 1)
        return SandboxReply.json(
            201,
            {
                "success": True,
                "message": "Event ticket created",
                "data": {"passInstance": _public(instance), "eventTicket": {"_id": template_id}},
            },
        )


def _public(instance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if k != "account"}
