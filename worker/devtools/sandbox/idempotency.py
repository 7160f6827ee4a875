"""e-guma's Idempotency-Key store, from its Idempotency article (shared/providers/).

Records are keyed by (merchant, endpoint, key) and hold a canonical hash of the body. The same
key with the same body replays the stored status and body (plus a marker header, switch
replay_header); a different body is refused (switch mismatch_status); a key whose first
request is still running is refused (switch in_flight_status). A record expires 72 hours after
its request completed, on the sandbox clock; then the key books again. Whether failed answers
are stored is the switch `failures`: "replay" keeps every answer the application gave,
an after-commit 5xx included; "release" forgets the key after any 4xx/5xx answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.devtools.sandbox.core import SimContext
from worker.devtools.sandbox.wire import SandboxReply

TTL_S = 72 * 3600.0
Scope = tuple[str, str, str]


@dataclass
class Record:
    fingerprint: str
    done: bool = False
    completed_at: float = 0.0
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def fingerprint(body: bytes) -> str:
    """The same JSON with keys in another order or other spacing is the same body."""
    try:
        canonical = json.dumps(json.loads(body.decode("utf-8")), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self) -> None:
        self.records: dict[Scope, Record] = {}

    def run(
        self,
        scope: Scope,
        body: bytes,
        ctx: SimContext,
        process: Callable[[], SandboxReply],
        refuse: Callable[[int, str, str], SandboxReply],
    ) -> SandboxReply:
        """Answer one request under its key: replay, refuse, or process and keep the answer."""
        digest = fingerprint(body)
        record = self.records.get(scope)
        if record is not None and record.done and ctx.clock.now() >= record.completed_at + TTL_S:
            del self.records[scope]
            record = None
        if record is not None:
            if not record.done:
                return refuse(
                    int(ctx.switches["in_flight_status"]),
                    "idempotency_key_in_use",
                    "A request with this Idempotency-Key is still being processed",
                )
            if record.fingerprint != digest:
                return refuse(
                    int(ctx.switches["mismatch_status"]),
                    "idempotency_key_mismatch",
                    "This Idempotency-Key was already used with a different request body",
                )
            headers = {**record.headers, ctx.switches["replay_header"]: "true"}
            return SandboxReply(record.status, record.body, headers)
        record = Record(digest)
        self.records[scope] = record
        reply = process()
        release = ctx.switches["failures"] == "release"
        clock = ctx.clock

        def complete(answered: SandboxReply) -> None:
            if release and answered.status >= 400:
                if self.records.get(scope) is record:
                    del self.records[scope]
                return
            record.status, record.body = answered.status, answered.body
            record.headers = dict(answered.headers)
            record.completed_at = clock.now()
            record.done = True

        reply.on_sent = complete
        return reply
