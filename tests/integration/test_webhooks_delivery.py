"""Delivery to real local HTTP servers: retried until a 2xx with the same webhook-id and
body each time, signed as the Standard Webhooks specification says; a hanging receiver costs
its own entries one timeout and delays no other receiver; the allow-list, https and redirects
are enforced when the request is about to leave."""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import Engine

from schemas.result import ResultMessage, Ticket
from worker.backoff import parse_retry_after
from worker.db import make_engine
from worker.settings import AccountConfig, SecretStr, Settings
from worker.webhooks import outbox, signing
from worker.webhooks.deliver import Report, deliver_due

SECRET = signing.generate_secret()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1. `answers` is the status of each request in turn (the
    last one repeats); `hang_s` makes every request wait that long before answering."""

    answers: list[int] = field(default_factory=lambda: [204])
    hang_s: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[ThreadingHTTPServer, Receiver]] = []

    def start(**kwargs: object) -> Receiver:
        rec = Receiver(**kwargs)  # type: ignore[arg-type]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.seen.append(Seen(self.path, headers, body, time.monotonic()))
                if rec.hang_s:
                    rec.release.wait(rec.hang_s)
                status = rec.answers[min(len(rec.seen) - 1, len(rec.answers) - 1)]
                self.send_response(status)
                for name, value in rec.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        rec.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, rec))
        return rec

    yield start
    for server, rec in servers:
        rec.release.set()
        server.shutdown()
        server.server_close()


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "callback_allowed_hosts": "127.0.0.1",
        "callback_http_hosts": "127.0.0.1",
        "callback_backoff_base_s": 0.05,
        "callback_backoff_cap_s": 0.1,
        "callback_timeout_s": 5.0,
        "callback_connect_timeout_s": 2.0,
        "callback_max_attempts": 10,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def account(url: str, secret: str | list[str] = SECRET, name: str = "default") -> AccountConfig:
    secrets = [secret] if isinstance(secret, str) else secret
    return AccountConfig(
        provider="eguma",
        name=name,
        base_url="https://api.example",
        callback_url=url,
        callback_secret=tuple(SecretStr(s) for s in secrets),
    )


def make_result(account_name: str = "default", revision: int = 1) -> ResultMessage:
    return ResultMessage(
        message_id=f"BK-{uuid.uuid4().hex[:8]}",
        idempotency_key=str(uuid.uuid4()),
        provider="eguma",
        account=account_name,
        generation=0,
        status="issued",
        attempts=1,
        provider_reference="EG-1",
        tickets=[Ticket(ticket_id="T1", code="QR-1")],
        metadata={"order": "ü-42"},
        completed_at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        revision=revision,
    )


def enqueue(engine: Engine, result: ResultMessage, url: str) -> None:
    with engine.begin() as conn:
        assert outbox.enqueue(conn, result, url)


def entries(engine: Engine) -> dict[str, outbox.Entry]:
    found = outbox.entries(engine, states=("pending", "dead", "delivered"), limit=1000)
    return {e.idempotency_key: e for e in found}


def drive(engine: Engine, s: Settings, accounts: dict[tuple[str, str], AccountConfig], runs: int) -> Report:
    total = Report()
    for _ in range(runs):
        total.add(deliver_due(engine, s, accounts))
        time.sleep(0.15)  # past the (tiny) backoff of the test settings
    return total


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def test_fails_twice_then_204_delivered_once_with_one_webhook_id(
    engine: Engine, serve: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ticketrelay")
    rec = serve(answers=[500, 503, 204])
    accounts = {("eguma", "default"): account(rec.url() + "?token=receiver-token")}
    result = make_result()
    enqueue(engine, result, rec.url() + "?token=receiver-token")
    s = settings()
    report = drive(engine, s, accounts, runs=6)
    assert (report.delivered, report.retried, report.dead) == (1, 2, 0)
    assert len(rec.seen) == 3  # nothing after the 204
    ids = {seen.headers["webhook-id"] for seen in rec.seen}
    assert ids == {outbox.webhook_id_for(result.idempotency_key, 1)}
    for seen in rec.seen:
        assert seen.body == result.model_dump_json().encode()
        assert seen.headers["content-type"] == "application/json"
        assert seen.path == "/hook?token=receiver-token"
        signing.verify(SECRET, seen.headers, seen.body)  # ours, and the spec's rules
        signature = seen.headers["webhook-signature"]
        assert signature.startswith("v1,") and len(base64.b64decode(signature[3:])) == 32
    assert ResultMessage.model_validate_json(rec.seen[-1].body) == result
    entry = entries(engine)[result.idempotency_key]
    assert entry.state == "delivered" and entry.attempts == 3 and entry.last_status == 204
    # Neither the secret nor the receiver's token reaches a log line of ours (httpx's own
    # request log is silenced by worker.logs.setup_logging).
    ours = [r for r in caplog.records if r.name.startswith("ticketrelay")]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert "webhook_delivered" in logged
    assert SECRET not in logged and SECRET[6:] not in logged and "receiver-token" not in logged


def test_a_receiver_that_hangs_delays_only_its_own_entries(
    engine: Engine, serve: Callable[..., Receiver]
) -> None:
    hung = serve(hang_s=30.0)
    fine = serve(answers=[200])
    s = settings(callback_timeout_s=2.0, callback_backoff_base_s=60.0, callback_backoff_cap_s=60.0)
    accounts = {
        ("eguma", "default"): account(hung.url()),
        ("eguma", "other"): account(fine.url(), name="other"),
    }
    stuck = [make_result() for _ in range(3)]
    healthy = [make_result("other") for _ in range(3)]
    for r in stuck:
        enqueue(engine, r, hung.url())
    for r in healthy:
        enqueue(engine, r, fine.url())
    started = time.monotonic()
    report = deliver_due(engine, s, accounts)
    took = time.monotonic() - started
    assert report.delivered == 3 and report.retried == 1 and report.deferred == 2
    # The healthy receiver had all three long before the hung one's timeout.
    assert len(fine.seen) == 3 and max(x.at for x in fine.seen) - started < 1.8
    # One timeout for the hung receiver, not one per entry (three would take 6 s).
    assert len(hung.seen) == 1 and 2.0 <= took < 5.0
    by_key = entries(engine)
    assert all(by_key[r.idempotency_key].state == "delivered" for r in healthy)
    states = sorted((by_key[r.idempotency_key].attempts, by_key[r.idempotency_key].last_error) for r in stuck)
    assert states[0] == states[1] == (0, None)  # deferred, no attempt counted
    assert states[2][0] == 1 and "timeout" in (states[2][1] or "")
    assert outbox.claim_due(engine, 10, 60) == []  # all of them wait for a later run


def test_allow_list_and_https_are_checked_when_sending(
    sqlite_engine: Engine, serve: Callable[..., Receiver]
) -> None:
    rec = serve()
    accounts = {("eguma", "default"): account(rec.url())}
    r1, r2, r3 = make_result(), make_result(), make_result()
    enqueue(sqlite_engine, r1, rec.url())
    enqueue(sqlite_engine, r2, f"http://localhost:{rec.port}/hook")
    enqueue(sqlite_engine, r3, rec.url())
    # The host was allowed when queued; the configuration changed since.
    report = deliver_due(sqlite_engine, settings(callback_allowed_hosts="hooks.example.com"), accounts)
    assert report.retried == 3 and rec.seen == []
    by_key = entries(sqlite_engine)
    assert "not in TICKETRELAY_CALLBACK_ALLOWED_HOSTS" in (by_key[r1.idempotency_key].last_error or "")
    # Allowed, but plain http only where explicitly allowed.
    time.sleep(0.15)
    report = deliver_due(
        sqlite_engine,
        settings(callback_allowed_hosts="127.0.0.1,localhost", callback_http_hosts=""),
        accounts,
    )
    assert rec.seen == []
    assert "needs https" in (entries(sqlite_engine)[r1.idempotency_key].last_error or "")
    time.sleep(0.15)
    report = deliver_due(sqlite_engine, settings(callback_allowed_hosts="127.0.0.1,localhost"), accounts)
    assert report.delivered == 2 and len(rec.seen) == 2  # localhost still needs https
    assert "needs https" in (entries(sqlite_engine)[r2.idempotency_key].last_error or "")


def test_redirects_are_not_followed_and_410_stops(
    sqlite_engine: Engine, serve: Callable[..., Receiver]
) -> None:
    target = serve()
    moved = serve(answers=[302], extra_headers={"location": target.url("/elsewhere")})
    gone = serve(answers=[410])
    accounts = {("eguma", "default"): account(moved.url())}
    r_moved, r_gone = make_result(), make_result()
    enqueue(sqlite_engine, r_moved, moved.url())
    enqueue(sqlite_engine, r_gone, gone.url())
    report = drive(sqlite_engine, settings(), accounts, runs=3)
    assert target.seen == []  # the Location was never followed
    assert len(moved.seen) == 3 and report.retried == 3
    by_key = entries(sqlite_engine)
    assert "redirects are not followed" in (by_key[r_moved.idempotency_key].last_error or "")
    assert by_key[r_gone.idempotency_key].state == "dead" and len(gone.seen) == 1
    # An operator replays it once the receiver is back: delivered with the same id.
    gone.answers[:] = [204]
    gone.seen.clear()
    assert outbox.replay(sqlite_engine, key=r_gone.idempotency_key) == 1
    deliver_due(sqlite_engine, settings(), accounts)
    assert entries(sqlite_engine)[r_gone.idempotency_key].state == "delivered"
    assert gone.seen[0].headers["webhook-id"] == outbox.webhook_id_for(r_gone.idempotency_key, 1)


def test_retry_after_and_dead_after_the_attempt_limit(
    sqlite_engine: Engine, serve: Callable[..., Receiver]
) -> None:
    busy = serve(answers=[429], extra_headers={"retry-after": "120"})
    down = serve(answers=[500])
    accounts = {("eguma", "default"): account(busy.url())}
    r_busy, r_down = make_result(), make_result()
    enqueue(sqlite_engine, r_busy, busy.url())
    enqueue(sqlite_engine, r_down, down.url())
    s = settings(callback_max_attempts=3, callback_backoff_cap_s=600.0)
    drive(sqlite_engine, s, accounts, runs=4)
    by_key = entries(sqlite_engine)
    waiting = by_key[r_busy.idempotency_key]
    assert len(busy.seen) == 1 and waiting.state == "pending"
    assert (waiting.next_attempt_at - datetime.now(UTC)).total_seconds() > 100
    assert by_key[r_down.idempotency_key].state == "dead" and len(down.seen) == 3
    assert by_key[r_down.idempotency_key].last_error == "HTTP 500"


def test_secret_problems_are_reported_without_the_secret(
    sqlite_engine: Engine, serve: Callable[..., Receiver]
) -> None:
    rec = serve()
    short = "whsec_" + base64.b64encode(b"k" * 10).decode()
    accounts = {
        ("eguma", "default"): account(rec.url(), secret=short),
        ("eguma", "none"): account(rec.url(), secret=[], name="none"),
    }
    r_short, r_none, r_gone = make_result(), make_result("none"), make_result("removed")
    for r in (r_short, r_none, r_gone):
        enqueue(sqlite_engine, r, rec.url())
    deliver_due(sqlite_engine, settings(), accounts)
    assert rec.seen == []
    by_key = entries(sqlite_engine)
    assert "24 to 64 bytes" in (by_key[r_short.idempotency_key].last_error or "")
    assert short[6:] not in (by_key[r_short.idempotency_key].last_error or "")
    assert "callback_secret is not set" in (by_key[r_none.idempotency_key].last_error or "")
    assert "eguma.removed is not configured" in (by_key[r_gone.idempotency_key].last_error or "")


def test_rotation_signs_with_every_secret(sqlite_engine: Engine, serve: Callable[..., Receiver]) -> None:
    rec = serve()
    new, old = signing.generate_secret(), signing.generate_secret()
    accounts = {("eguma", "default"): account(rec.url(), secret=[new, old])}
    enqueue(sqlite_engine, make_result(), rec.url())
    assert deliver_due(sqlite_engine, settings(), accounts).delivered == 1
    (seen,) = rec.seen
    assert len(seen.headers["webhook-signature"].split(" ")) == 2
    signing.verify(old, seen.headers, seen.body)
    signing.verify(new, seen.headers, seen.body)


def test_a_refused_connection_is_retried(sqlite_engine: Engine) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    url = f"http://127.0.0.1:{port}/hook"
    enqueue(sqlite_engine, make_result(), url)
    report = deliver_due(sqlite_engine, settings(), {("eguma", "default"): account(url)})
    assert report.retried == 1
    (entry,) = entries(sqlite_engine).values()
    assert entry.last_error == "connection failed (ConnectError)"


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30
    assert parse_retry_after("Tue, 01 Dec 2026 12:01:00 GMT", now=now) == 60
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_a_caller_supplied_client_is_used_and_left_open(
    sqlite_engine: Engine, serve: Callable[..., Receiver]
) -> None:
    rec = serve()
    enqueue(sqlite_engine, make_result(), rec.url())
    with httpx.Client() as client:
        assert (
            deliver_due(
                sqlite_engine, settings(), {("eguma", "default"): account(rec.url())}, client
            ).delivered
            == 1
        )
        assert not client.is_closed
    assert rec.seen[0].headers["user-agent"] == "ticketrelay-webhooks/1"
