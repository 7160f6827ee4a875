"""Provider adapters: one module per provider API, all running the pipeline of pipeline.py.

This registry is the one list of providers. Each adapter carries what the rest of ticketrelay
asks of a provider: its payload model (intake's validation), its credentials check, its
new-generation rule (`ticketrelay reissue --new-generation`), the codes to store before the
first call, the sandbox route of its simulator, the account probe (`ticketrelay accounts
check`) and `issue`. docs/adding-a-provider.md says how to add one.

client = build_client(account)          # once per account and thread (issuing.ClientCache)
outcome = get_provider(account.provider).issue(client, attempt)
"""

from __future__ import annotations

import functools
import ssl

import certifi
import httpx

from worker.providers.base import Attempt, Outcome, OutcomeKind, Provider
from worker.providers.eguma import provider as _eguma
from worker.providers.fourvenues import provider as _fourvenues
from worker.providers.fourvenues_channels import provider as _fourvenues_channels
from worker.providers.pipeline import Adapter, ProbeResult
from worker.providers.remypass import provider as _remypass
from worker.providers.transport import PooledTransport
from worker.settings import AccountConfig, get_settings

# The envelope's `provider` values, in the contract's order.
PROVIDERS: dict[str, Adapter] = {p.name: p for p in (_remypass, _fourvenues, _fourvenues_channels, _eguma)}
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)


def get_provider(name: str) -> Adapter:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}") from None


def sandbox_base_url(provider: str, sandbox_url: str) -> str:
    """The base_url of a sandbox account of `provider` (its simulator's route)."""
    return f"{sandbox_url.rstrip('/')}/{get_provider(provider).sandbox_route}"


def build_client(account: AccountConfig, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """One client per account, reused across threads: the account's timeout, no redirects,
    no credentials (each adapter adds its own per request). `transport` is for tests
    (httpx.MockTransport(handler))."""
    return httpx.Client(
        timeout=httpx.Timeout(account.timeout_s),
        follow_redirects=False,
        headers={"User-Agent": "ticketrelay"},
        transport=transport or _pooled(account.provider, account.name, account.base_url),
        limits=CONNECTION_LIMITS,
        verify=_tls_context(),
    )


@functools.lru_cache(maxsize=256)
def _pooled(provider: str, name: str, base_url: str) -> PooledTransport:
    """One connection pool per account, shared by every thread's client (see transport.py),
    sized for the calls this process makes at once."""
    del provider, name, base_url  # the cache key: one pool per account and address
    return PooledTransport(ssl_context=_tls_context(), maxsize=get_settings().worker_concurrency)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # One for all clients: each httpx.Client would otherwise load the CA bundle into a context
    # of its own (measured: +75 MiB of worker RSS with a client per thread).
    return ssl.create_default_context(cafile=certifi.where())


# Each worker thread has its own client (worker.issuing.ClientCache), so a client needs only a
# few connections; keeping them alive for 30 s instead of 5 avoids a reconnect (a TLS handshake
# against a real provider) after every pause of a quiet account.
CONNECTION_LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=30)


__all__ = [
    "PROVIDERS",
    "PROVIDER_NAMES",
    "Adapter",
    "Attempt",
    "Outcome",
    "OutcomeKind",
    "ProbeResult",
    "Provider",
    "build_client",
    "get_provider",
    "sandbox_base_url",
]
