"""The transport under every provider client: urllib3's connection pool behind httpx's API.

Why not httpx's own (httpcore): measured with 64 threads POSTing to the sandbox, httpcore cost
1.43 ms of client CPU per request and served 695 requests/s; the same httpx.Client over this
transport cost 0.71 ms and served 1,215/s (bench/RESULTS.md, "HTTP client"). httpcore scans its
whole pool under one lock for every request; urllib3 keeps idle connections in a LIFO queue.
The adapters keep httpx's Request/Response API, and tests keep httpx.MockTransport.

What must not change with the transport is what a failure means for a booking in doubt, so
urllib3's errors become httpx's own classes (worker.providers.base.send reads them):
- the request never left: httpx.ConnectError / ConnectTimeout (a refused or timed-out
  connect, a failed TLS handshake, a name that does not resolve);
- it may have reached the provider: httpx.ReadTimeout / WriteTimeout, httpx.RemoteProtocolError
  (a connection dropped before or during the answer, a garbled answer).
Nothing is ever retried here: a resend is the pipeline's decision (retries=False).
"""

from __future__ import annotations

import ssl
import time
from datetime import timedelta

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)


class PooledTransport(httpx.BaseTransport):
    """One pool per account, shared by the worker's threads (urllib3's pools are thread-safe).
    `maxsize`: connections kept per host; more are opened when needed and closed after use."""

    def __init__(self, *, ssl_context: ssl.SSLContext, maxsize: int) -> None:
        # No keep-alive expiry to set: urllib3 drops a connection the server closed when it
        # next takes it from the pool.
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=maxsize,
            block=False,
            retries=False,
            ssl_context=ssl_context,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # As httpcore does: a URL that is not http(s) with a host is refused before any connect
        # (the pipeline reports it as a configuration problem, nothing sent).
        if request.url.scheme not in ("http", "https") or not request.url.host:
            raise httpx.UnsupportedProtocol("the URL is not an http(s) URL with a host", request=request)
        timeouts = request.extensions.get("timeout") or {}
        timeout = urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read"))
        started = time.perf_counter()
        try:
            answer = self._pool.urlopen(
                request.method,
                str(request.url),
                body=request.read() or None,
                headers=dict(request.headers),
                redirect=False,
                retries=False,
                timeout=timeout,
                preload_content=True,
                decode_content=True,
            )
        except MaxRetryError as exc:  # not raised with retries=False, but never let it through
            raise _translate(exc.reason or exc, request) from None
        except HTTPError as exc:
            raise _translate(exc, request) from None
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in _DECODED]
        response = httpx.Response(
            answer.status, headers=headers, content=answer.data, request=request, extensions={}
        )
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    def close(self) -> None:
        self._pool.clear()


# urllib3 has already undone the content encoding: httpx must not try again.
_DECODED = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def _translate(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """httpx's class for urllib3's error; the text names the class only (a URL may hold a key)."""
    what = type(exc).__name__
    if isinstance(exc, LocationValueError):  # URLSchemeUnknown among them: nothing was sent
        return httpx.UnsupportedProtocol(what, request=request)
    # NewConnectionError is a subclass of ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, NewConnectionError | NameResolutionError | SSLError | ProxyError):
        return httpx.ConnectError(what, request=request)
    if isinstance(exc, ConnectTimeoutError):
        return httpx.ConnectTimeout(what, request=request)
    if isinstance(exc, ReadTimeoutError):
        return httpx.ReadTimeout(what, request=request)
    if isinstance(exc, ProtocolError):
        return httpx.RemoteProtocolError(what, request=request)
    # Anything else may have happened after the request left: in doubt.
    return httpx.RemoteProtocolError(what, request=request)
