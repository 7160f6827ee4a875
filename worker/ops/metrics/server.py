"""`ticketrelay metrics`: the exporter's HTTP side. prometheus_client's WSGI app and threading
WSGI server do the serving; this module only adds /healthz and a 404 for other paths.

Endpoints: /metrics (Prometheus text, or OpenMetrics when asked) and /healthz ("ok").
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from worker import redis_clients
from worker.db import make_engine, pool_options
from worker.ops.metrics.collector import TicketrelayCollector
from worker.outage import outage_collectors
from worker.settings import AccountsError, Settings, get_accounts, get_settings


class _Server(ThreadingWSGIServer):
    allow_reuse_address = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise


def make_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """The exporter in a background thread (`start`, `stop`)."""

    def __init__(
        self,
        settings: Settings,
        host: str | None = None,
        port: int | None = None,
        cache_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, options=pool_options(settings, pool_size=2))
        self.client = redis_clients.client("ops", settings)
        accounts = get_accounts(settings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = TicketrelayCollector(
            settings,
            self.engine,
            self.client,
            accounts.keys(),
            cache_s=settings.metrics_cache_s if cache_s is None else cache_s,
        )
        self.registry.register(self.collector)
        for extra in outage_collectors(self.client, settings.metrics_key, accounts.keys()):
            self.registry.register(extra)
        host = settings.metrics_host if host is None else host
        port = settings.metrics_port if port is None else port
        server_class: type[ThreadingWSGIServer] = _Server
        if ":" in host:  # an IPv6 address such as "::"
            server_class = _V6Server
        self.httpd: ThreadingWSGIServer = make_server(
            host, port, make_app(self.registry), server_class, _QuietHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()
        self.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    import logging

    from worker.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="ticketrelay metrics", description="Serve Prometheus metrics on /metrics (and /healthz)."
    )
    parser.add_argument("--host", help="listen address (default TICKETRELAY_METRICS_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default TICKETRELAY_METRICS_PORT, 9808)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        server = MetricsServer(get_settings(), args.host, args.port).start()
    except AccountsError as exc:  # labels are checked against the accounts: they are needed
        print(f"ticketrelay metrics: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("ticketrelay.metrics").info(
        "serving metrics on %s/metrics", server.url, extra={"event": "metrics_listening"}
    )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: stop.set())
    stop.wait()
    server.stop()
    return 0
