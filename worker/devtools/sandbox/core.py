"""The sandbox: routing, faults, switches, clock and ground truth around four provider simulators.

One implementation, two fronts: `Sandbox.handle` is an httpx MockTransport handler (in-process
tests), and server.py serves `Sandbox.dispatch` over real HTTP. State sits behind one lock;
injected latency is slept outside it, so concurrent requests overlap like they would at a
real provider (e-guma's "same key still in flight" needs that).

The simulators are written from the providers' documentation (shared/providers/) and share
no code with the product's clients: nothing here imports the product.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.utils import formatdate
from typing import Any, Protocol

import httpx

from worker.devtools.sandbox.accounts import (
    DEFAULT_KEYS,
    FOURVENUES_V1,
    NO_PERMISSION_KEY,
)
from worker.devtools.sandbox.checks import Invalid
from worker.devtools.sandbox.clock import Clock, iso_z
from worker.devtools.sandbox.faults import STATUS_TEXT, FaultConfig, fault_name, is_after_create
from worker.devtools.sandbox.switches import SwitchBoard
from worker.devtools.sandbox.truth import Tally
from worker.devtools.sandbox.wire import Route, SandboxReply, SandboxRequest, cannot, match

__all__ = [
    "DEFAULT_KEYS",
    "FOURVENUES_V1",
    "NO_PERMISSION_KEY",
    "FaultConfig",
    "Sandbox",
    "SandboxReply",
    "SandboxRequest",
    "SimContext",
]


@dataclass
class SimContext:
    tally: Tally
    rng: random.Random
    keys: Mapping[str, str]
    switches: dict[str, Any]
    clock: Clock

    def account_for(self, key: str | None) -> str | None:
        return self.keys.get(key) if key else None


class Simulator(Protocol):
    name: str  # the provider name, as in the envelope
    prefix: str  # first path segment under which it is served

    def routes(self, switches: Mapping[str, Any]) -> list[Route]: ...

    def handle(
        self, route: Route, params: dict[str, str], request: SandboxRequest, ctx: SimContext
    ) -> SandboxReply: ...

    def error_reply(self, status: int, message: str, switches: Mapping[str, Any]) -> SandboxReply: ...

    def reset(self) -> None: ...


def run_route(
    sim: Simulator,
    route: Route,
    params: dict[str, str],
    request: SandboxRequest,
    ctx: SimContext,
    account: str,
) -> SandboxReply:
    """The route's answer for an authenticated account; a failed check becomes the simulator's
    own error body (the handlers raise Invalid and never build error replies themselves)."""
    try:
        reply: SandboxReply = route.handler(request, ctx, account, **params)
    except Invalid as exc:
        return sim.error_reply(exc.status, exc.message, ctx.switches)
    return reply


class Sandbox:
    """The four simulators behind one router; thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 0,
        keys: Mapping[str, str] | None = None,
        switches: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """`switches` (provider -> {name: value}) replaces the defaults of this sandbox: reset()
        and reset_switches() come back to them. ValueError for unknown names or values."""
        from worker.devtools.sandbox.eguma import EgumaSim
        from worker.devtools.sandbox.fourvenues import FourvenuesSim
        from worker.devtools.sandbox.fourvenues_channels import ChannelsSim
        from worker.devtools.sandbox.remypass import RemyPassSim

        self._lock = threading.RLock()
        self._seed = seed
        self._keys = dict(DEFAULT_KEYS if keys is None else keys)
        self._eguma = EgumaSim()
        sims: list[Simulator] = [RemyPassSim(), FourvenuesSim(), ChannelsSim(), self._eguma]
        self._sims = {sim.name: sim for sim in sims}
        self._by_prefix = {sim.prefix: sim for sim in sims}
        self._faults: dict[str, FaultConfig] = {}
        self._tallies: dict[str, Tally] = {}
        self._switches = SwitchBoard(switches)
        self._clock = Clock()
        self._windows: dict[tuple[str, str], deque[float]] = {}  # rate limit: arrivals per key
        self._rng = random.Random(seed)
        self.reset()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._sims)

    # ---- control -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every ticket, key, fault, switch position and count; the clock is real again."""
        with self._lock:
            for sim in self._sims.values():
                sim.reset()
            self._faults = {name: FaultConfig() for name in self._sims}
            self._tallies = {name: Tally() for name in self._sims}
            self._switches.reset()
            self._clock.reset()
            self._windows.clear()
            self._rng = random.Random(self._seed)

    def set_faults(self, provider: str, **faults: Any) -> None:
        """Replace the faults of `provider` ("*" for all); see FaultConfig for the names.
        `seed=N` re-seeds the random faults; `accept_duplicate_qr=bool` is the old name of the
        Fourvenues switch duplicate_qr. Raises ValueError for unknown names or values."""
        seed = faults.pop("seed", None)
        accept_dup = faults.pop("accept_duplicate_qr", None)
        names = self._names(provider)
        try:
            configs = {
                name: FaultConfig(**{**faults, "fail_next": list(faults.get("fail_next", []))})
                for name in names
            }
        except TypeError as exc:
            raise ValueError(f"unknown fault setting: {exc}") from None
        with self._lock:
            if accept_dup is not None:
                if not isinstance(accept_dup, bool):
                    raise ValueError("accept_duplicate_qr must be true or false")
                for name in names:
                    if name in ("fourvenues", "fourvenues_channels"):
                        self._switches.set(name, duplicate_qr="accept" if accept_dup else "refuse")
            self._faults.update(configs)
            if seed is not None:
                self._rng = random.Random(int(seed))

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(cfg) for name, cfg in self._faults.items()}

    def set_switches(self, provider: str, **switches: Any) -> None:
        """Move switches of `provider` ("*": every provider that has the switch); the others keep
        their position. ValueError for an unknown provider, switch or value (nothing changes)."""
        with self._lock:
            self._switches.set(provider, **switches)

    def reset_switches(self, provider: str = "*") -> None:
        with self._lock:
            self._switches.reset(provider)

    def switches(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._switches.as_dict()

    def advance_clock(self, seconds: float) -> None:
        """Move the providers' clock forward (idempotency expiry, reservation holds, starts)."""
        with self._lock:
            self._clock.advance(seconds)

    def now(self) -> float:
        return self._clock.now()

    def check_in(self, provider: str, code: str) -> None:
        """Mark a ticket as checked in at the venue (e-guma: then its booking cannot be cancelled)."""
        if provider != "eguma":
            raise ValueError("check-in is simulated for eguma only")
        with self._lock:
            self._eguma.check_in(code)

    def ground_truth(self) -> dict[str, dict[str, Any]]:
        """Per provider: requests, tickets, faults injected, creations per booking identity
        (RemyPass bookingId, e-guma Idempotency-Key, Fourvenues each ticket's qr_code),
        creations per request, every ticket issued with its code and status, revoke / refund /
        cancel calls per ticket or booking, requests per route."""
        with self._lock:
            return {name: tally.as_dict() for name, tally in self._tallies.items()}

    def _names(self, provider: str) -> tuple[str, ...]:
        names = self.providers if provider == "*" else (provider,)
        for name in names:
            if name not in self._sims:
                raise ValueError(f"unknown provider {name!r}; known: {', '.join(self._sims)}")
        return names

    # ---- the in-process front ------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        """An httpx.MockTransport handler."""
        query = dict(request.url.params.multi_items())
        reply = self.dispatch(request.method, request.url.path, query, request.headers, request.read())
        if reply.action == "timeout":
            raise httpx.ReadTimeout("sandbox: injected timeout", request=request)
        if reply.action == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        headers = dict(reply.headers)
        # Every HTTP server with a clock sends Date (RFC 9110 6.6.1); this one's is the
        # simulated clock, the one its tickets' created_at come from.
        headers.setdefault("Date", formatdate(self.now(), usegmt=True))
        return httpx.Response(reply.status, headers=headers, content=reply.body)

    # ---- shared by both fronts -----------------------------------------------------------
    def dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: httpx.Headers,
        body: bytes,
    ) -> SandboxReply:
        method = method.upper()
        first, _, rest = path.lstrip("/").partition("/")
        if first == "_sandbox":
            return self._control(method, "/" + rest, body)
        sim = self._by_prefix.get(first)
        if sim is None:
            return cannot(method, path)
        request = SandboxRequest(method, "/" + rest, query, headers, body)
        with self._lock:
            faults, tally = self._faults[sim.name], self._tallies[sim.name]
            switches = self._switches.get(sim.name)
            tally.requests += 1
            tally.arrivals.append(time.time())
            found = match(sim.routes(switches), method, request.path)
            tally.routes[found[0].name if found else "unknown"] += 1
            fault = self._rate_limited(sim.name, faults, request) or faults.pick(self._rng)
            ctx = SimContext(tally, self._rng, self._keys, switches, self._clock)
        latency = faults.latency_ms / 1000.0
        if fault is not None and not is_after_create(fault):
            return self._fault_before(sim, fault, faults, tally, latency, switches)
        with self._lock:
            if found is None:
                reply = cannot(method, request.path)
            else:
                reply = sim.handle(found[0], found[1], request, ctx)
        if latency:
            time.sleep(latency)
        final, answered = reply, reply
        if fault is not None:
            with self._lock:
                tally.faults[fault_name(fault)] += 1
            kind = fault.get("kind")
            if kind == "drop_after_create":
                final = SandboxReply(0, action="drop")
            elif kind == "malformed_after_create":
                # A proxy garbles the answer; the application itself answered normally.
                final = SandboxReply.html(200, "<html><body>Bad gateway</body></html>")
            else:
                status = int(fault["status"])
                answered = final = sim.error_reply(status, STATUS_TEXT.get(status, "Error"), switches)
        if reply.on_sent is not None:
            with self._lock:
                reply.on_sent(answered)
        return final

    def _rate_limited(self, name: str, cfg: FaultConfig, request: SandboxRequest) -> dict[str, Any] | None:
        """A 429 when this key went over the provider's per-second limit (under the lock)."""
        if not cfg.rate_limit_per_s:
            return None
        h = request.headers
        key = (
            h.get("x-api-key")
            or h.get("authorization")
            or h.get("integration_id")
            or request.query.get("apikey")
        )
        now = time.monotonic()
        window = self._windows.setdefault((name, key or ""), deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= cfg.rate_limit_per_s:
            return {"status": 429, "retry_after": 1, "rate_limited": True}
        window.append(now)
        return None

    def _fault_before(
        self,
        sim: Simulator,
        fault: dict[str, Any],
        cfg: FaultConfig,
        tally: Tally,
        latency: float,
        switches: Mapping[str, Any],
    ) -> SandboxReply:
        with self._lock:
            tally.faults[fault_name(fault)] += 1
        if fault.get("kind") == "timeout":
            return SandboxReply(0, action="timeout", sleep_s=cfg.timeout_sleep_s)
        if latency:
            time.sleep(latency)
        status = int(fault["status"])
        reply = sim.error_reply(status, STATUS_TEXT.get(status, "Injected error"), switches)
        retry_after = fault.get("retry_after")
        if retry_after is not None:
            reply.headers["Retry-After"] = (
                str(retry_after) if isinstance(retry_after, str) else f"{float(retry_after):g}"
            )
        return reply

    def _control(self, method: str, path: str, body: bytes) -> SandboxReply:
        try:
            data = json.loads(body.decode("utf-8") or "{}") if method == "POST" else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if method == "GET" and path == "/ground-truth":
                return SandboxReply.json(200, self.ground_truth())
            if method == "GET" and path == "/faults":
                return SandboxReply.json(200, self.faults())
            if method == "GET" and path == "/switches":
                return SandboxReply.json(200, self.switches())
            if method == "GET" and path == "/clock":
                return SandboxReply.json(200, self._clock_view())
            if method == "POST" and path == "/reset":
                self.reset()
                return SandboxReply.json(200, {"ok": True})
            if method == "POST" and path == "/faults":
                provider = _provider_of(data)
                self.set_faults(provider, **data)
                current = self.faults()
                shown = current if provider == "*" else {provider: current[provider]}
                return SandboxReply.json(200, {"ok": True, "faults": shown})
            if method == "POST" and path == "/switches":
                provider = _provider_of(data)
                if data.pop("reset", False) is True:
                    self.reset_switches(provider)
                self.set_switches(provider, **data)
                current = self.switches()
                shown = current if provider == "*" else {provider: current[provider]}
                return SandboxReply.json(200, {"ok": True, "switches": shown})
            if method == "POST" and path == "/clock":
                if set(data) != {"advance_s"}:
                    raise ValueError('expected {"advance_s": seconds}')
                self.advance_clock(data["advance_s"])
                return SandboxReply.json(200, {"ok": True, **self._clock_view()})
            if method == "POST" and path == "/check-in":
                target, code = data.get("provider"), data.get("ticket_number")
                if not isinstance(target, str) or not isinstance(code, str):
                    raise ValueError('expected {"provider": "eguma", "ticket_number": ...}')
                self.check_in(target, code)
                return SandboxReply.json(200, {"ok": True})
        except ValueError as exc:
            return SandboxReply.json(400, {"error": str(exc)})
        return SandboxReply.json(404, {"error": "unknown sandbox control route"})

    def _clock_view(self) -> dict[str, Any]:
        return {"now": iso_z(self._clock.utc()), "offset_s": self._clock.offset_s}


def _provider_of(data: dict[str, Any]) -> str:
    provider = data.pop("provider", None)
    if not isinstance(provider, str):
        raise ValueError('expected {"provider": NAME or "*", ...settings}')
    return provider
