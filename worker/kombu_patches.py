"""A workaround for a kombu 5.7 Redis transport bug, applied by worker.app.

When the broker connection is lost, Celery closes the channel and kombu releases its connection
info. Anything that later touches Redis through that channel builds a new client from the
released info and raises `AttributeError: 'NoneType' object has no attribute 'hostname'` (or
`... 'client'`). Celery treats that as an "Unrecoverable error" and the worker process exits.
Found by tests/e2e/test_outages_e2e.py in two places:

- restoring the unacknowledged messages when the connection goes (under load);
- acknowledging, after the reconnect, a task that was running during the outage (a batch task
  waiting for slow provider calls): Celery acks through the message's old channel.

Skipping the Redis call in exactly that case is safe: the message stays in Redis' `unacked`
hash and comes back after the visibility timeout; by then its bookings are final in the ledger,
so running it again publishes nothing new and calls no provider (and the sweeper re-drives any
booking that was not finished much sooner).

Upstream: not reported yet; docs/upstream.md holds the report, ready to file, with a minimal
reproduction. Related, closed and older: celery/kombu#582 (the same AttributeError from
`_connparams` on a closed channel, kombu 3.0) and celery/kombu#970 (restore_unacked at shutdown,
kombu 4.2.2). The patch is written for the kombu versions in WRITTEN_FOR: `apply()` refuses any
other, so an upgrade cannot silently run with a patch that no longer fits (review it, then add
the version or delete the patch when kombu fixes the bug).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import kombu
from kombu.transport import redis as kombu_redis

from worker.workarounds import UnsupportedVersion as UnsupportedVersion
from worker.workarounds import require_reviewed

log = logging.getLogger("ticketrelay.worker")

# The kombu releases whose QoS.restore_unacked / ack / restore_by_tag this patch was checked against.
WRITTEN_FOR = ("5.7.0",)


def check_version(installed: str) -> None:
    require_reviewed(
        "kombu",
        installed,
        WRITTEN_FOR,
        what="the workaround in worker/kombu_patches.py",
        review="is the bug fixed? did QoS.restore_unacked, ack or restore_by_tag change?",
        remedy="remove the patch",
    )


_PATCHED = ("restore_unacked", "ack", "restore_by_tag")
_originals: dict[str, Callable[..., Any]] = {name: getattr(kombu_redis.QoS, name) for name in _PATCHED}


def connection_gone(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def _guarded(name: str) -> Callable[..., Any]:
    original = _originals[name]

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except AttributeError:
            if not connection_gone(getattr(self, "channel", None)):
                raise  # not the known case: let it surface
            log.warning(
                "broker connection already gone: %s skipped; the message stays in Redis and comes "
                "back after the visibility timeout (the sweeper re-drives its bookings sooner)",
                name,
                extra={"event": "broker_call_skipped", "call": name},
            )
            return None

    return call


_restore_unacked = _guarded("restore_unacked")
_ack = _guarded("ack")
_restore_by_tag = _guarded("restore_by_tag")


def apply(installed: str | None = None) -> None:
    """Install the patch; raises UnsupportedVersion (at start-up) for an unreviewed kombu."""
    check_version(kombu.__version__ if installed is None else installed)
    # A patch, on purpose: kombu offers no hook for this.
    kombu_redis.QoS.restore_unacked = _restore_unacked  # type: ignore[method-assign]
    kombu_redis.QoS.ack = _ack  # type: ignore[method-assign]
    kombu_redis.QoS.restore_by_tag = _restore_by_tag  # type: ignore[method-assign]
