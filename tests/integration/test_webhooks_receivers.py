"""The receiver snippets of docs/webhooks.md (kept in examples/webhooks/) verify what the
deliverer really sends: each runs as a real HTTP server, the deliverer POSTs to it, the
receiver answers 204 only to a good signature. They also pass the specification's vector on
their own, so a mistake shared by our signer and a snippet cannot hide."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine

from schemas.result import ResultMessage
from tests.conftest import free_port
from worker.db import make_engine
from worker.settings import AccountConfig, SecretStr, Settings
from worker.webhooks import outbox, signing
from worker.webhooks.deliver import deliver_due

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "webhooks"
DOC = ROOT / "docs" / "webhooks.md"
SECRET = signing.generate_secret()

# The standard-webhooks Python library's test vector.
VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "headers": {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    },
    "body": '{"test": 2432232314}',
    "now": 1614265330,
}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Node.js 18+)")
needs_php = pytest.mark.skipif(
    shutil.which("php") is None, reason="php is not installed (apt-get install php-cli)"
)


def load_python_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_verify_example", EXAMPLES / "verify.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def settings() -> Settings:
    return Settings(
        callback_allowed_hosts="127.0.0.1",
        callback_http_hosts="127.0.0.1",
        callback_backoff_base_s=30.0,
        callback_timeout_s=5.0,
    )


def accounts_for(url: str) -> dict[tuple[str, str], AccountConfig]:
    def make(name: str, secret: str) -> AccountConfig:
        return AccountConfig(
            provider="eguma",
            name=name,
            base_url="https://api.example",
            callback_url=url,
            callback_secret=(SecretStr(secret),),
        )

    return {
        ("eguma", "default"): make("default", SECRET),
        ("eguma", "forged"): make("forged", signing.generate_secret()),
    }


def queue(engine: Engine, url: str, account: str) -> ResultMessage:
    r = ResultMessage(
        message_id=f"BK-{uuid.uuid4().hex[:6]}",
        idempotency_key=str(uuid.uuid4()),
        provider="eguma",
        account=account,
        generation=0,
        status="issued",
        attempts=1,
        metadata={"note": "Zürich"},
        completed_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    with engine.begin() as conn:
        assert outbox.enqueue(conn, r, url)
    return r


def deliver_good_and_forged(engine: Engine, url: str) -> tuple[ResultMessage, ResultMessage]:
    """One result signed with the receiver's secret, one signed with another: the receiver
    must take the first (204) and refuse the second (400)."""
    good, forged = queue(engine, url, "default"), queue(engine, url, "forged")
    report = deliver_due(engine, settings(), accounts_for(url))
    assert (report.delivered, report.retried) == (1, 1)
    by_key = {e.idempotency_key: e for e in outbox.entries(engine, states=("pending", "delivered"))}
    assert by_key[good.idempotency_key].state == "delivered"
    assert by_key[good.idempotency_key].last_status == 204
    assert by_key[forged.idempotency_key].state == "pending"
    assert by_key[forged.idempotency_key].last_error == "HTTP 400"
    return good, forged


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited: {proc.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("receiver did not start listening")


def run_receiver(argv: list[str], port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "PORT": str(port)}
    proc = subprocess.Popen(
        argv, cwd=EXAMPLES, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    return out, err


def test_doc_shows_the_example_files_verbatim() -> None:
    doc = DOC.read_text()
    for name in ("verify.py", "verify.js", "verify.php"):
        assert (EXAMPLES / name).read_text().strip() in doc, f"docs/webhooks.md lost sync with {name}"


def test_python_snippet_passes_the_vector() -> None:
    example = load_python_example()
    body = VECTOR["body"].encode()
    example.verify_webhook(VECTOR["secret"], VECTOR["headers"], body, now=VECTOR["now"])
    for bad in (body + b" ", body.replace(b"2", b"3")):
        with pytest.raises(example.InvalidWebhook):
            example.verify_webhook(VECTOR["secret"], VECTOR["headers"], bad, now=VECTOR["now"])
    with pytest.raises(example.InvalidWebhook, match="5 minutes"):
        example.verify_webhook(VECTOR["secret"], VECTOR["headers"], body, now=VECTOR["now"] + 301)


def test_python_receiver_takes_a_real_delivery(sqlite_engine: Engine) -> None:
    example = load_python_example()
    got: list[tuple[str, dict[str, Any]]] = []

    class Mine(example.Receiver):  # type: ignore[name-defined,misc]
        secret = SECRET
        seen: set[str] = set()

        def handle_result(self, webhook_id: str, result: dict[str, Any]) -> None:
            got.append((webhook_id, result))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Mine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ticketrelay"
        good, _forged = deliver_good_and_forged(sqlite_engine, url)
    finally:
        server.shutdown()
        server.server_close()
    assert got == [(outbox.webhook_id_for(good.idempotency_key, 1), json.loads(good.model_dump_json()))]


@needs_node
def test_node_snippet_passes_the_vector() -> None:
    script = (
        "const { verifyWebhook } = require('./verify.js');"
        "const v = JSON.parse(process.argv[1]);"
        "verifyWebhook(v.secret, v.headers, Buffer.from(v.body), v.now);"
        "let refused = false;"
        "try { verifyWebhook(v.secret, v.headers, Buffer.from(v.body + ' '), v.now); }"
        "catch (e) { refused = true; }"
        "if (!refused) process.exit(3);"
        "console.log('ok');"
    )
    proc = subprocess.run(
        ["node", "-e", script, json.dumps(VECTOR)], cwd=EXAMPLES, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr


@needs_node
def test_node_receiver_takes_a_real_delivery(sqlite_engine: Engine) -> None:
    port = free_port()
    proc = run_receiver(["node", "verify.js"], port)
    try:
        good, forged = deliver_good_and_forged(sqlite_engine, f"http://127.0.0.1:{port}/ticketrelay")
    finally:
        out, err = stop(proc)
    lines = out.splitlines()
    assert lines == [f"{outbox.webhook_id_for(good.idempotency_key, 1)} {good.idempotency_key} 1 issued"], err
    assert forged.idempotency_key not in out


@needs_php
def test_php_snippet_passes_the_vector() -> None:
    code = (
        "require 'verify.php';"
        "$v = json_decode($argv[1], true);"
        "verify_webhook($v['secret'], $v['headers'], $v['body'], $v['now']);"
        "try { verify_webhook($v['secret'], $v['headers'], $v['body'] . ' ', $v['now']); exit(3); }"
        "catch (RuntimeException $e) {}"
        "echo 'ok';"
    )
    proc = subprocess.run(
        ["php", "-r", code, json.dumps(VECTOR)], cwd=EXAMPLES, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr


@needs_php
def test_php_receiver_takes_a_real_delivery(sqlite_engine: Engine) -> None:
    port = free_port()
    proc = run_receiver(["php", "-S", f"127.0.0.1:{port}", "verify.php"], port)
    try:
        good, forged = deliver_good_and_forged(sqlite_engine, f"http://127.0.0.1:{port}/ticketrelay")
    finally:
        _out, err = stop(proc)
    verified = [line.split("verified ", 1)[1] for line in err.splitlines() if "verified " in line]
    assert verified == [
        f"{outbox.webhook_id_for(good.idempotency_key, 1)} {good.idempotency_key} 1 issued"
    ], err
    assert forged.idempotency_key not in err
