"""A booking pipeline in one process for the cancellation tests: the ledger on the test's
database, a real Redis for results, the in-process sandbox as every provider."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, update

from schemas.result import ResultMessage
from tests.helpers import entry, envelope
from worker import issuing, ledger
from worker.devtools.sandbox.core import Sandbox
from worker.providers import build_client
from worker.settings import AccountConfig, Settings, sandbox_accounts
from worker.validation import Accepted, validate_entry

# The void route of each provider (what "the void call" is, for losing its answer).
VOID_ROUTES = {
    "remypass": re.compile(r"/passes/[^/]+/revoke$"),
    "fourvenues": re.compile(r"/integrations/tickets/refund/[^/]+$"),
    "fourvenues_channels": re.compile(r"/tickets/[^/]+/refund$"),
    "eguma": re.compile(r"/ticketing/cancel-booking\.json$"),
}
PROVIDERS = tuple(VOID_ROUTES)


class Harness:
    def __init__(self, engine: Engine, client: redis.Redis, **settings: Any) -> None:
        self.sandbox = Sandbox(seed=5)
        self.settings = Settings(backoff_base_s=0.01, backoff_cap_s=0.02, default_max_attempts=4, **settings)
        self.accounts = sandbox_accounts("http://sandbox", self.settings)
        # Requests whose answer is lost after the provider processed them (path patterns).
        self.lose_answer: list[re.Pattern[str]] = []
        self.deps = issuing.Deps(
            engine=engine,
            redis=client,
            settings=self.settings,
            accounts=self.accounts,
            clients=issuing.ClientCache(self._client),
        )

    def _client(self, account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        response = self.sandbox.handle(request)
        for pattern in list(self.lose_answer):
            if pattern.search(request.url.path):
                self.lose_answer.remove(pattern)
                raise httpx.ReadError("connection lost after the provider answered", request=request)
        return response

    # --- messages ---------------------------------------------------------------------------

    def accept(self, env: dict[str, Any]) -> str:
        verdict = validate_entry(entry(env), self.settings, self.accounts)
        assert isinstance(verdict, Accepted), verdict
        ledger.create_queued(self.deps.engine, verdict.booking())
        return verdict.idempotency_key

    def book(self, provider: str, mid: str, **payload_changes: Any) -> str:
        env = envelope(provider, mid)
        env["payload"].update(payload_changes)
        return self.accept(env)

    def cancel(self, provider: str, mid: str, booking_mid: str, payload: dict[str, Any] | None = None) -> str:
        env: dict[str, Any] = {
            "message_id": mid,
            "operation": "cancel",
            "cancels": booking_mid,
            "provider": provider,
        }
        if payload is not None:
            env["payload"] = payload
        return self.accept(env)

    # --- work -------------------------------------------------------------------------------

    def run(self, key: str) -> issuing.Next:
        """One run of the task for `key` (the issue task hands cancels on)."""
        return issuing.process(self.deps, key)

    def work(self, key: str, runs: int = 20) -> str:
        """Run `key` until its row is final, skipping waits as a countdown would."""
        for _ in range(runs):
            self.run(key)
            row = self.row(key)
            if ledger.is_final(row):
                return row.status
            self.due_now(key)
        raise AssertionError(f"never final: {self.row(key).status}")

    def due_now(self, key: str) -> None:
        with self.deps.engine.begin() as conn:
            conn.execute(
                update(ledger.T)
                .where(ledger.C.idempotency_key == key)
                .values(next_attempt_at=ledger.utcnow())
            )

    def row(self, key: str) -> Any:
        found = ledger.get(self.deps.engine, key)
        assert found is not None
        return found

    # --- what happened ----------------------------------------------------------------------

    def cancel_calls(self, provider: str) -> dict[str, int]:
        out: dict[str, int] = self.sandbox.ground_truth()[provider]["cancel_calls"]
        return out

    def issued_status(self, provider: str) -> dict[str, str]:
        return {t["id"]: t["status"] for t in self.sandbox.ground_truth()[provider]["issued"]}

    def results(self, key: str) -> list[ResultMessage]:
        entries = self.deps.redis.xrange(self.settings.results_stream)
        found = [ResultMessage.model_validate(json.loads(f[b"result"])) for _id, f in entries]
        return [r for r in found if r.idempotency_key == key]
