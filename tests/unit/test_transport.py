"""The provider clients' transport (worker/providers/transport.py) over a real socket: answers
come through as httpx gives them, and each kind of failure keeps the meaning the issue path
gives it (not sent, or in doubt)."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from worker.providers import base, build_client
from worker.providers.transport import PooledTransport
from worker.settings import AccountConfig


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.startswith("/drop"):
            self.close_connection = True
            return  # no answer at all
        if self.path.startswith("/slow"):
            threading.Event().wait(1.0)
        key = self.headers["Idempotency-Key"].encode()
        payload = b'{"echo": ' + (body or b"null") + b', "key": "' + key + b'"}'
        zipped = gzip.compress(payload)
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(zipped)))
        self.end_headers()
        self.wfile.write(zipped)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def client(timeout: float = 5.0) -> httpx.Client:
    import ssl

    transport = PooledTransport(ssl_context=ssl.create_default_context(), maxsize=4)
    return httpx.Client(timeout=timeout, transport=transport)


def test_an_answer_comes_through_decoded_with_its_headers_and_time(server: str) -> None:
    with client() as c:
        for n in range(3):  # the same pooled connection serves them in turn
            r = c.post(f"{server}/ok", json={"n": n}, headers={"Idempotency-Key": f"k-{n}"})
            assert r.status_code == 201
            assert r.json() == {"echo": {"n": n}, "key": f"k-{n}"}
            assert r.headers["content-type"] == "application/json"
            assert r.elapsed.total_seconds() > 0


def test_a_refused_connection_was_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with client() as c:
        request = c.build_request("POST", f"http://127.0.0.1:{port}/x", json={})
        outcome = base.send(c, request, label="test")
    assert isinstance(outcome, base.Outcome)
    assert outcome.kind is base.OutcomeKind.RETRY and not outcome.may_have_created


def test_a_read_timeout_is_in_doubt(server: str) -> None:
    with client(timeout=0.2) as c:
        outcome = base.send(c, c.build_request("POST", f"{server}/slow", json={}), label="test")
    assert isinstance(outcome, base.Outcome)
    assert outcome.error is not None and outcome.error.type == "timeout"
    assert outcome.may_have_created


def test_a_connection_dropped_without_an_answer_is_in_doubt(server: str) -> None:
    with client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post(f"{server}/drop", json={})
        outcome = base.send(c, c.build_request("POST", f"{server}/drop", json={}), label="test")
    assert isinstance(outcome, base.Outcome) and outcome.may_have_created
    assert "127.0.0.1" not in (outcome.error.message if outcome.error else "")  # no URL in messages


def test_provider_clients_use_the_pooled_transport() -> None:
    account = AccountConfig(provider="eguma", name="default", base_url="https://api.example.test/v1")
    with build_client(account) as c:
        assert isinstance(c._transport, PooledTransport)
        # One pool per account, shared by the threads' clients.
        with build_client(account) as other:
            assert other._transport is c._transport
