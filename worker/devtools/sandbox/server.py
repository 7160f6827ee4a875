"""The sandbox over real HTTP (stdlib ThreadingHTTPServer, no extra dependency).

Injected "timeout": the handler stays silent for timeout_sleep_s, then closes the connection.
"drop": the connection is closed without an answer. Request lines are never logged (the
e-guma API key travels in the query string).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from worker.devtools.sandbox.core import Sandbox
from worker.devtools.sandbox.switches import parse_switch


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of new connections from two worker pools
    # overflowed it and clients waited for SYN retransmits. Real providers sit behind load
    # balancers with deep queues; so does the simulator now.
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-request (a worker killed on purpose, a timeout) is part of
        # the game here, not an error worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and close the socket (for a server started with start_in_thread)."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes: with Nagle's algorithm the body waited for
    # the client's delayed ACK, 40 ms per answer (measured: one client thread got 20 answers
    # a second). Real providers' servers answer in one go.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = httpx.Headers(list(self.headers.items()))
        reply = self.server.sandbox.dispatch(self.command, unquote(parts.path), query, headers, body)
        if reply.action is not None:
            if reply.action == "timeout":
                time.sleep(reply.sleep_s)
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header by the simulated clock (the one tickets' created_at come from).
        return formatdate(self.server.sandbox.now() if timestamp is None else timestamp, usegmt=True)

    def log_message(self, format: str, *args: object) -> None:
        return  # never log request lines: they may hold an API key


def make_server(host: str, port: int, sandbox: Sandbox | None = None) -> SandboxHTTPServer:
    return SandboxHTTPServer((host, port), sandbox or Sandbox())


def serve(host: str, port: int, sandbox: Sandbox | None = None) -> None:
    """Serve until interrupted (blocking)."""
    server = make_server(host, port, sandbox)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def start_in_thread(
    sandbox: Sandbox | None = None, host: str = "127.0.0.1", port: int = 0
) -> SandboxHTTPServer:
    """Start serving in a daemon thread (port 0: any free port, see `.url`); `.stop()` ends it."""
    server = make_server(host, port, sandbox)
    thread = threading.Thread(target=server.serve_forever, name="ticketrelay-sandbox", daemon=True)
    thread.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.devtools.sandbox", description="ticketrelay provider sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults and ids")
    parser.add_argument(
        "--switch",
        action="append",
        default=[],
        metavar="PROVIDER.NAME=VALUE",
        help="start with a switch moved from its default (repeatable; see the sandbox README)",
    )
    args = parser.parse_args(argv)
    start: dict[str, dict[str, Any]] = {}
    try:
        for text in args.switch:
            provider, name, value = parse_switch(text)
            start.setdefault(provider, {})[name] = value
        sandbox = Sandbox(seed=args.seed, switches=start)
    except ValueError as exc:
        parser.error(str(exc))
    server = make_server(args.host, args.port, sandbox)
    print(f"ticketrelay sandbox listening on {server.url}", flush=True)
    print(
        "routes: /remypass/api/v1/public, /fourvenues, /fourvenues-channels, /eguma/v1; "
        "control: /_sandbox/faults, /_sandbox/switches, /_sandbox/clock, /_sandbox/check-in, "
        "/_sandbox/ground-truth, /_sandbox/reset",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
