"""The sandbox: routing, fault injection and ground truth around four provider simulators.

One implementation, two fronts: `Sandbox.handle` is an httpx MockTransport handler (in-process
tests), and server.py serves `Sandbox.dispatch` over real HTTP. State sits behind one lock;
injected latency is slept outside it, so concurrent requests overlap like they would at a
real provider (e-guma's "same key still in flight" needs that).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from schemas.errors import describe
from worker.settings import (
    SANDBOX_API_KEY,
    SANDBOX_FOURVENUES_INTEGRATION_ID,
    SANDBOX_FOURVENUES_SECRET,
)

# Keys the sandbox knows, mapped to the account (merchant, organisation, channel) they open.
DEFAULT_KEYS: dict[str, str] = {SANDBOX_API_KEY: "default", "sandbox-key-2": "second"}
# RemyPass: a valid key without the passes:issue permission (403).
NO_PERMISSION_KEY = "sandbox-no-permission"
FOURVENUES_V1 = (SANDBOX_FOURVENUES_INTEGRATION_ID, SANDBOX_FOURVENUES_SECRET)

Action = Literal["timeout", "drop"]
_KINDS = ("timeout", "drop_after_create", "malformed_after_create")


@dataclass
class SandboxRequest:
    method: str
    path: str  # below the provider's prefix, starting with "/"
    query: dict[str, str]
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The JSON body; ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class SandboxReply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # "timeout": answer nothing for longer than the client waits; "drop": close the connection
    # without an answer. In-process both raise the matching httpx exception instead.
    action: Action | None = None
    sleep_s: float = 0.0
    # Runs under the lock once the (possibly slow) answer is ready: e-guma completes a key here.
    on_sent: Callable[[], None] | None = None

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> SandboxReply:
        return cls(
            status,
            json.dumps(obj).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def text(cls, status: int, text: str) -> SandboxReply:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


@dataclass
class FaultConfig:
    """Faults of one provider; set_faults replaces the whole config."""

    latency_ms: float = 0.0
    # Scripted answers, one consumed per request: {"status": 500}, {"status": 429,
    # "retry_after": 2}, {"status": 500, "after_create": true}, {"kind": "timeout"},
    # {"kind": "drop_after_create"}, {"kind": "malformed_after_create"}.
    fail_next: list[dict[str, Any]] = field(default_factory=list)
    error_500_rate: float = 0.0
    error_503_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: float | None = None
    timeout_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    # How long the HTTP server stays silent for a "timeout" (beyond the client's timeout).
    timeout_sleep_s: float = 30.0
    # Fourvenues (both APIs): create another ticket with an existing qr_code instead of the
    # default 400 "qr_code already exists" (the undocumented worst case).
    accept_duplicate_qr: bool = False

    def __post_init__(self) -> None:
        for entry in self.fail_next:
            if not isinstance(entry, dict):
                raise ValueError("fail_next entries must be objects")
            kind, status = entry.get("kind"), entry.get("status")
            if kind is None and not (isinstance(status, int) and 400 <= status <= 599):
                raise ValueError(f"fail_next entry needs a 4xx/5xx status or a kind: {entry}")
            if kind is not None and kind not in _KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(_KINDS)}")
        rates = ("error_500_rate", "error_503_rate", "rate_429", "timeout_rate", "drop_after_create_rate")
        for name in rates:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


@dataclass
class Tally:
    """Ground truth of one provider."""

    requests: int = 0
    tickets: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    creations: Counter[str] = field(default_factory=Counter)  # per booking identity
    creations_by_request: Counter[str] = field(default_factory=Counter)
    # Arrival times of the latest requests, to check rate limits from the provider's side.
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def created(self, identities: list[str], request_key: str, tickets: int) -> None:
        for identity in identities:
            self.creations[identity] += 1
        self.creations_by_request[request_key] += 1
        self.tickets += tickets

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tickets": self.tickets,
            "faults": dict(self.faults),
            "creations": dict(self.creations),
            "creations_by_request": dict(self.creations_by_request),
            "recent_arrivals": list(self.arrivals),
        }


@dataclass
class SimContext:
    faults: FaultConfig
    tally: Tally
    rng: random.Random
    keys: Mapping[str, str]

    def account_for(self, key: str | None) -> str | None:
        return self.keys.get(key) if key else None


class Simulator(Protocol):
    name: str  # the provider name, as in the envelope
    prefix: str  # first path segment under which it is served

    def handle(self, request: SandboxRequest, ctx: SimContext) -> SandboxReply: ...

    def error_reply(self, status: int, message: str) -> SandboxReply: ...

    def reset(self) -> None: ...


def validate(model: type[BaseModel], data: Any) -> str | None:
    """None when `data` satisfies the payload schema, else a message naming the fields."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return describe(exc)
    return None


class Sandbox:
    """The four simulators behind one router; thread-safe."""

    def __init__(self, *, seed: int = 0, keys: Mapping[str, str] | None = None) -> None:
        from worker.devtools.sandbox.eguma import EgumaSim
        from worker.devtools.sandbox.fourvenues import FourvenuesSim
        from worker.devtools.sandbox.fourvenues_channels import ChannelsSim
        from worker.devtools.sandbox.remypass import RemyPassSim

        self._lock = threading.RLock()
        self._seed = seed
        self._keys = dict(keys or DEFAULT_KEYS)
        sims: list[Simulator] = [RemyPassSim(), FourvenuesSim(), ChannelsSim(), EgumaSim()]
        self._sims = {sim.name: sim for sim in sims}
        self._by_prefix = {sim.prefix: sim for sim in sims}
        self._faults: dict[str, FaultConfig] = {}
        self._tallies: dict[str, Tally] = {}
        self._rng = random.Random(seed)
        self.reset()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._sims)

    # ---- control -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every ticket, key, fault and count."""
        with self._lock:
            for sim in self._sims.values():
                sim.reset()
            self._faults = {name: FaultConfig() for name in self._sims}
            self._tallies = {name: Tally() for name in self._sims}
            self._rng = random.Random(self._seed)

    def set_faults(self, provider: str, **faults: Any) -> None:
        """Replace the faults of `provider` ("*" for all); see FaultConfig for the names.
        `seed=N` re-seeds the random faults. Raises ValueError for unknown names or values."""
        seed = faults.pop("seed", None)
        names = self.providers if provider == "*" else (provider,)
        for name in names:
            if name not in self._sims:
                raise ValueError(f"unknown provider {name!r}; known: {', '.join(self._sims)}")
        try:
            configs = {
                name: FaultConfig(**{**faults, "fail_next": list(faults.get("fail_next", []))})
                for name in names
            }
        except TypeError as exc:
            raise ValueError(f"unknown fault setting: {exc}") from None
        with self._lock:
            self._faults.update(configs)
            if seed is not None:
                self._rng = random.Random(int(seed))

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(cfg) for name, cfg in self._faults.items()}

    def ground_truth(self) -> dict[str, dict[str, Any]]:
        """Per provider: requests, tickets, faults injected, creations per booking identity
        (RemyPass bookingId, e-guma Idempotency-Key, Fourvenues qr_code), and creations per
        request (Fourvenues: the request's qr_codes joined with "+")."""
        with self._lock:
            return {name: tally.as_dict() for name, tally in self._tallies.items()}

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
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body)

    # ---- shared by both fronts -----------------------------------------------------------
    def dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: httpx.Headers,
        body: bytes,
    ) -> SandboxReply:
        first, _, rest = path.lstrip("/").partition("/")
        if first == "_sandbox":
            return self._control(method, "/" + rest, body)
        sim = self._by_prefix.get(first)
        if sim is None:
            return SandboxReply.json(404, {"error": "no sandbox provider under this path"})
        request = SandboxRequest(method.upper(), "/" + rest, query, headers, body)
        with self._lock:
            faults, tally = self._faults[sim.name], self._tallies[sim.name]
            tally.requests += 1
            tally.arrivals.append(time.time())
            fault = self._pick_fault(faults)
            ctx = SimContext(faults, tally, self._rng, self._keys)
        latency = faults.latency_ms / 1000.0
        after_create = fault is not None and (
            fault.get("kind") in ("drop_after_create", "malformed_after_create")
            or bool(fault.get("after_create"))
        )
        if fault is not None and not after_create:
            return self._fault_before(sim, fault, faults, tally, latency)
        with self._lock:
            reply = sim.handle(request, ctx)
        if latency:
            time.sleep(latency)
        if reply.on_sent is not None:
            with self._lock:
                reply.on_sent()
        if fault is not None:
            reply = self._fault_after(sim, fault, tally)
        return reply

    def _pick_fault(self, cfg: FaultConfig) -> dict[str, Any] | None:
        if cfg.fail_next:
            return cfg.fail_next.pop(0)
        choices: list[tuple[float, dict[str, Any]]] = [
            (cfg.error_500_rate, {"status": 500}),
            (cfg.error_503_rate, {"status": 503}),
            (cfg.rate_429, {"status": 429, "retry_after": cfg.retry_after}),
            (cfg.timeout_rate, {"kind": "timeout"}),
            (cfg.drop_after_create_rate, {"kind": "drop_after_create"}),
        ]
        if not any(rate for rate, _ in choices):
            return None
        roll, total = self._rng.random(), 0.0
        for rate, entry in choices:
            total += rate
            if roll < total:
                return entry
        return None

    def _fault_before(
        self,
        sim: Simulator,
        fault: dict[str, Any],
        cfg: FaultConfig,
        tally: Tally,
        latency: float,
    ) -> SandboxReply:
        with self._lock:
            if fault.get("kind") == "timeout":
                tally.faults["timeout"] += 1
                return SandboxReply(0, action="timeout", sleep_s=cfg.timeout_sleep_s)
            status = int(fault["status"])
            tally.faults[f"status_{status}"] += 1
        if latency:
            time.sleep(latency)
        reply = sim.error_reply(status, _STATUS_TEXT.get(status, "Injected error"))
        retry_after = fault.get("retry_after")
        if retry_after is not None:
            reply.headers["Retry-After"] = (
                str(retry_after) if isinstance(retry_after, str) else f"{float(retry_after):g}"
            )
        return reply

    def _fault_after(self, sim: Simulator, fault: dict[str, Any], tally: Tally) -> SandboxReply:
        kind = fault.get("kind")
        with self._lock:
            tally.faults[str(kind or f"status_{fault['status']}_after_create")] += 1
        if kind == "drop_after_create":
            return SandboxReply(0, action="drop")
        if kind == "malformed_after_create":
            return SandboxReply(200, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
        return sim.error_reply(int(fault["status"]), _STATUS_TEXT.get(fault["status"], "Error"))

    def _control(self, method: str, path: str, body: bytes) -> SandboxReply:
        try:
            if method == "GET" and path == "/ground-truth":
                return SandboxReply.json(200, self.ground_truth())
            if method == "GET" and path == "/faults":
                return SandboxReply.json(200, self.faults())
            if method == "POST" and path == "/reset":
                self.reset()
                return SandboxReply.json(200, {"ok": True})
            if method == "POST" and path == "/faults":
                data = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(data, dict) or not isinstance(data.get("provider"), str):
                    raise ValueError('expected {"provider": NAME, ...fault settings}')
                provider = data.pop("provider")
                self.set_faults(provider, **data)
                current = self.faults()
                shown = current if provider == "*" else {provider: current[provider]}
                return SandboxReply.json(200, {"ok": True, "faults": shown})
        except ValueError as exc:
            return SandboxReply.json(400, {"error": str(exc)})
        return SandboxReply.json(404, {"error": "unknown sandbox control route"})


_STATUS_TEXT: dict[int, str] = {
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def new_id(rng: random.Random, length: int = 24) -> str:
    """A Mongo-style hex id."""
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


def assign_qr_codes(
    tickets: list[dict[str, Any]],
    taken: Callable[[str], bool],
    rng: random.Random,
    allow_duplicates: bool,
    length: int = 9,
) -> list[str] | None:
    """The Fourvenues rule, shared by both of its APIs: keep a sent qr_code, generate a fresh one
    where none was sent. None when a sent code already exists (and duplicates are refused)."""
    codes: list[str] = []
    for ticket in tickets:
        code = ticket.get("qr_code")
        if code is None:
            code = new_code(rng, length)
            while taken(code):
                code = new_code(rng, length)
        elif taken(code) and not allow_duplicates:
            return None
        codes.append(code)
    return codes


def new_code(rng: random.Random, length: int = 9) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(length))
