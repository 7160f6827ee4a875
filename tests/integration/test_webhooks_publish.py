"""The publish path queues callbacks: a booking issued by worker.issuing, with the in-process
sandbox, ends up POSTed, signed, to its account's callback URL, with the very bytes that went
to the result stream; a republish queues nothing new; an account without a callback_url
queues nothing. Skipped until the publish path calls the outbox (integration step 1 of the
webhooks work: ledger.mark_callbacks_sent(..., also=...))."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fakeredis
import httpx
import pytest

from tests.helpers import accept_booking, envelope
from worker import issuing, ledger
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.intake import Intake
from worker.providers import build_client
from worker.settings import AccountConfig, SecretStr, Settings, sandbox_accounts
from worker.webhooks import outbox, signing
from worker.webhooks.deliver import deliver_due

pytestmark = pytest.mark.skipif(
    "also" not in inspect.signature(ledger.mark_callbacks_sent).parameters,
    reason="the publish path does not queue webhooks yet (ledger.mark_callbacks_sent has no `also`)",
)

SECRET = signing.generate_secret()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/results", got
    server.shutdown()
    server.server_close()


@pytest.fixture
def deps(database_url: str, receiver: tuple[str, list[object]]) -> Iterator[issuing.Deps]:
    url, _got = receiver
    settings = Settings(
        database_url=database_url, callback_allowed_hosts="127.0.0.1", callback_http_hosts="127.0.0.1"
    )
    sandbox = Sandbox(seed=1)
    accounts = sandbox_accounts("http://sandbox", settings)
    eguma = accounts[("eguma", "default")]
    accounts[("eguma", "default")] = eguma.model_copy(
        update={"callback_url": url, "callback_secret": (SecretStr(SECRET),)}
    )

    def factory(account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(sandbox.handle))

    d = issuing.Deps(
        engine=make_engine(database_url),
        redis=fakeredis.FakeRedis(),
        settings=settings,
        accounts=accounts,
        clients=issuing.ClientCache(factory),
    )
    yield d
    d.engine.dispose()


def test_an_issued_result_is_queued_with_its_publish_and_delivered(
    deps: issuing.Deps, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    _url, got = receiver
    key = accept_booking(deps.engine, "eguma", "hook-1")
    quiet = accept_booking(deps.engine, "remypass", "no-hook-1")  # its account has no callback_url
    issuing.process(deps, key)
    issuing.process(deps, quiet)
    (entry,) = outbox.entries(deps.engine)
    streamed = {
        f[b"result"] for _id, f in deps.redis.xrange("ticketrelay:results") if key.encode() in f[b"result"]
    }
    assert streamed == {entry.body}  # the very bytes of the stream entry
    assert entry.idempotency_key == key and entry.revision == 1

    # A republish (the sweeper, a duplicate message) queues nothing new.
    row = ledger.get(deps.engine, key)
    assert row is not None
    issuing.publish_finals(deps, [row])
    assert len(outbox.entries(deps.engine, states=("pending", "delivered", "dead"))) == 1

    report = deliver_due(deps.engine, deps.settings, deps.accounts)
    assert report.delivered == 1
    ((headers, body),) = got
    signing.verify(SECRET, headers, body)
    assert body == entry.body and headers["webhook-id"] == outbox.webhook_id_for(key, 1)


def test_a_rejected_message_from_intake_is_queued_too(redis_client: Any, settings: Settings) -> None:
    """Intake publishes `rejected` results itself: those reach the callback URL as well."""
    accounts = sandbox_accounts("http://sandbox", settings)
    accounts[("eguma", "default")] = accounts[("eguma", "default")].model_copy(
        update={"callback_url": "https://hooks.example.com/in", "callback_secret": (SecretStr(SECRET),)}
    )
    engine = make_engine(settings.database_url)
    try:
        intake = Intake(redis_client, engine, settings, accounts, lambda _key: None)
        intake.ensure_group()
        bad = envelope("eguma", "hook-bad")
        bad["payload"]["items"] = "not a list"
        redis_client.xadd("ticketrelay:bookings", {"message": json.dumps(bad)})
        while intake.run_once():
            pass
        (entry,) = outbox.entries(engine)
        result = json.loads(entry.body)
        assert result["status"] == "rejected" and result["message_id"] == "hook-bad"
        assert entry.url == "https://hooks.example.com/in"
        # The same message again republishes the final result: still one entry.
        redis_client.xadd("ticketrelay:bookings", {"message": json.dumps(bad)})
        while intake.run_once():
            pass
        assert len(outbox.entries(engine)) == 1
    finally:
        engine.dispose()
