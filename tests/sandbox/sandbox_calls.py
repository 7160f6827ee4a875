"""Raw calls to each simulator, as the providers' docs write them (no product code)."""

from __future__ import annotations

from typing import Any

import httpx

from worker.devtools.sandbox.samples import sample_payload

KEY = "sandbox-key"
RP = "/remypass/api/v1/public"
FV = "/fourvenues/integrations/tickets"
CH = "/fourvenues-channels"
EG = "/eguma/v1/ticketing"


def remypass(
    client: httpx.Client,
    payload: dict[str, Any] | None = None,
    *,
    key: str = KEY,
    path: str = "/event-tickets/create-from-booking",
    bearer: bool = False,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    return client.post(RP + path, json=payload or sample_payload("remypass"), headers=headers)


def fv_headers(key: str = KEY) -> dict[str, str]:
    return {"x-api-key": key}


def fourvenues(
    client: httpx.Client, payload: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        FV + "/", json=payload or sample_payload("fourvenues"), headers=headers or fv_headers()
    )


def fv_payload(*codes: str | None, quantity: int | None = None) -> dict[str, Any]:
    """Integrations payload with one ticket object per code (None: no qr_code sent)."""
    body = sample_payload("fourvenues", tickets=len(codes))
    for ticket, code in zip(body["tickets"], codes, strict=True):
        if code is not None:
            ticket["qr_code"] = code
    body["quantity"] = len(codes) if quantity is None else quantity
    return body


def channels(
    client: httpx.Client, payload: dict[str, Any] | None = None, *, key: str = KEY
) -> httpx.Response:
    return client.post(
        CH + "/tickets", json=payload or sample_payload("fourvenues_channels"), headers={"X-Api-Key": key}
    )


def ch_payload(*codes: str | None, quantity: int | None = None) -> dict[str, Any]:
    body = sample_payload("fourvenues_channels", tickets=len(codes))
    for ticket, code in zip(body["tickets"], codes, strict=True):
        if code is not None:
            ticket["qr_code"] = code
    body["quantity"] = len(codes) if quantity is None else quantity
    return body


def eguma(
    client: httpx.Client,
    payload: dict[str, Any] | None = None,
    *,
    idem: str | None = "key-1",
    apikey: str | None = KEY,
    path: str = "/booking.json",
    content: bytes | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": idem} if idem is not None else {}
    params = {"apikey": apikey} if apikey is not None else {}
    if content is not None:
        return client.post(EG + path, content=content, headers=headers, params=params)
    return client.post(EG + path, json=payload or sample_payload("eguma"), headers=headers, params=params)


def eg_get(client: httpx.Client, path: str, **params: str) -> httpx.Response:
    return client.get(EG + path, params={"apikey": KEY, **params})


def eg_booking(starts_at: str = "2027-06-01T10:00:00", quantity: int = 2, **extra: Any) -> dict[str, Any]:
    """A booking on the unlimited time-slot product, at a slot in the future by default."""
    body = sample_payload("eguma", tickets=quantity)
    body["starts_at"] = starts_at
    body.update(extra)
    return body
