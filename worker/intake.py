"""The intake: consumes the bookings stream through a consumer group (at least once), and for
each entry validates, keys, writes the ledger row, enqueues a claim-check task, acknowledges.

An entry is acknowledged only after its outcome is durable (a ledger row plus a task, or a
dead letter plus a rejected result), so a crash anywhere means the entry is read again, by this
consumer or, after `intake_reclaim_idle_ms`, by another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from schemas.result import ResultError
from schemas.statuses import Status
from worker import intake_read, ledger, metrics, retention
from worker.heartbeat import Heartbeat
from worker.intake_read import BoundedReader, Entry, Oversized, Read
from worker.results import dead_letter, publish_result, result_from_row
from worker.settings import AccountConfig, Settings
from worker.transient import error_label, is_transient, where
from worker.validation import Accepted, Rejected, validate_entry
from worker.webhooks import outbox

log = logging.getLogger("ticketrelay.intake")

Enqueue = Callable[[str], None]
EnqueueMany = Callable[[list[str]], None]

# What the run loop waits out (with a backoff) when it escapes a read. Which errors escape is
# decided per entry by worker.transient.is_transient: an outage leaves the read pending, a refusal
# of one entry's data dead-letters that entry. BrokerError: Celery's send_task wraps a refused
# or lost broker connection in kombu's OperationalError, neither a redis error nor an OSError.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, SQLAlchemyError, OSError, BrokerError)
UNSTORABLE = "unstorable_message"
# An idle intake looks for new entries this often (see Intake._wait_for_new).
IDLE_POLL_MIN_S = 0.005
IDLE_POLL_MAX_S = 0.04


class Intake:
    def __init__(
        self,
        client: redis.Redis,
        engine: Engine,
        settings: Settings,
        accounts: dict[tuple[str, str], AccountConfig],
        enqueue: Enqueue,
        enqueue_many: EnqueueMany | None = None,
        enqueue_cancel: Enqueue | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings
        self.accounts = accounts
        self.enqueue = enqueue
        self.enqueue_many: EnqueueMany = enqueue_many or self._enqueue_each
        # 1.1: cancels go to their own task; without one, the issue task hands them on.
        self.enqueue_cancel: Enqueue | None = enqueue_cancel
        self.stream = settings.intake_stream
        self.group = settings.intake_group
        self.consumer = settings.consumer_name
        self._own_pending = True  # on start, finish what this consumer name left unacked
        self._last_reclaim = 0.0
        self.processed = 0
        self.heartbeat = Heartbeat("intake")
        self.reader = BoundedReader(
            client,
            self.stream,
            self.group,
            self.consumer,
            budget_bytes=settings.intake_read_budget_bytes,
            max_message_bytes=settings.max_message_bytes,
            max_entry_bytes=settings.max_message_bytes + settings.intake_entry_slack_bytes,
        )

    def _enqueue_each(self, keys: list[str]) -> None:
        for key in keys:
            self.enqueue(key)

    def _send_new(self, keys: list[str], accepted: list[Accepted]) -> None:
        """Enqueue the keys a read created: cancels (1.1) on the cancel task when one is
        configured, bookings in batches as before."""
        cancels = {ok.idempotency_key for ok in accepted if ok.envelope.operation == "cancel"}
        if self.enqueue_cancel is None or not cancels:
            self.enqueue_many(keys)
            return
        issues = [key for key in keys if key not in cancels]
        if issues:
            self.enqueue_many(issues)
        for key in keys:
            if key in cancels:
                self.enqueue_cancel(key)

    # --- one entry (after validation) ---------------------------------------------------

    def _existing(self, entry_id: str, fields: dict[Any, Any], ok: Accepted, sent: bool = False) -> str:
        """A valid entry whose key already has a row: a resend, or a different payload.
        `sent`: this read already enqueued the key, so a queued row needs nothing more."""
        existing = ledger.get(self.engine, ok.idempotency_key)
        if existing is None:
            # No row after all: an earlier entry of this read with the same key was refused
            # by the database. This one is judged on its own.
            return self._accept_one(entry_id, fields, ok, sent)
        if existing.payload_sha256 != ok.payload_sha256:
            return self._conflict(entry_id, fields, existing.message_id)
        if ledger.is_final(existing):
            self._publish(existing)
            return "republished"
        if existing.status == Status.QUEUED and not sent:
            # Perhaps we crashed between the insert and the enqueue: enqueue again (harmless:
            # the task's claim lets only one run reach the provider).
            self.enqueue(ok.idempotency_key)
        return "duplicate"

    def _accept_one(self, entry_id: str, fields: dict[Any, Any], ok: Accepted, sent: bool = False) -> str:
        """One valid entry in a transaction of its own: what a read falls back to when its
        batch was refused, so that only the entry the database refuses is dead-lettered."""
        try:
            created = ledger.create_queued(self.engine, ok.booking())
        except Exception as exc:
            if is_transient(exc):
                raise
            return self._unstorable(entry_id, fields, ok, exc)
        if not created:
            return self._existing(entry_id, fields, ok, sent)
        self.enqueue(ok.idempotency_key)
        log.info("accepted", extra={"event": "accepted", **self._ids(ok.booking())})
        return "accepted"

    def _unstorable(self, entry_id: str, fields: dict[Any, Any], ok: Accepted, exc: BaseException) -> str:
        """A valid envelope the database refuses for good: rejected, like an invalid one."""
        env = ok.envelope
        label = error_label(exc)
        log.warning(
            "the database refused an entry; dead-lettered",
            extra={"event": "unstorable", "error": label, "where": where(exc), "entry_id": entry_id},
        )
        bad = Rejected(
            UNSTORABLE,
            f"the database refused this message ({label}); nothing was sent to the provider",
            message_id=env.message_id,
            provider=env.provider,
            account=env.account,
            reply_to=ok.reply_to,
            metadata=env.metadata,
            raw_sha256=ok.payload_sha256,
        )
        return self._reject(entry_id, fields, bad)

    def _store_rejected(self, booking: ledger.NewBooking, error: ResultError) -> bool | None:
        """The `rejected` row: True when written now, False when the key already has a row,
        None when the database refuses it even without the producer's metadata and reply_to
        (then there is no row and no result, only the dead letter)."""
        plain = replace(booking, metadata={}, reply_to=self.settings.results_stream)
        for candidate in (booking, plain):
            try:
                return ledger.create_rejected(self.engine, candidate, error)
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.warning(
                    "the database refused a rejected row",
                    extra={"event": "rejected_row_refused", "error": error_label(exc), "where": where(exc)},
                )
        return None

    def _reject(self, entry_id: str, fields: dict[Any, Any], bad: Rejected) -> str:
        key = bad.idempotency_key
        stored: bool | None = None
        if key is not None:
            booking = ledger.NewBooking(
                idempotency_key=key,
                message_id=bad.message_id or "",
                provider=bad.provider,
                account=bad.account,
                generation=0,
                payload=None,  # never stored: it may be garbage, huge, or personal data
                payload_sha256=bad.raw_sha256,
                reply_to=bad.reply_to or self.settings.results_stream,
                metadata=bad.metadata,
            )
            error = ResultError(type=bad.error_type, message=bad.reason, retryable=False)
            stored = self._store_rejected(booking, error)
            if stored is False:
                existing = ledger.get(self.engine, key)
                assert existing is not None
                if existing.status != Status.REJECTED:
                    # An accepted message already owns this message_id: answering `rejected`
                    # now would contradict its result.
                    return self._conflict(entry_id, fields, existing.message_id, bad.reason)
        dead_letter(
            self.client,
            self.settings.dead_stream,
            fields,
            f"{bad.error_type}: {bad.reason}",
            entry_id,
            self.stream,
            self.settings.dead_maxlen,
        )
        metrics.dead_letter(self.client, self.settings, bad.error_type)
        if key is not None and stored is not None:
            row = ledger.get(self.engine, key)
            assert row is not None
            self._publish(row)
        log.warning(
            "rejected",
            extra={
                "event": "rejected",
                "error_type": bad.error_type,
                "reason": bad.reason,
                "message_id": bad.message_id,
                "provider": bad.provider,
                "entry_id": entry_id,
            },
        )
        return "rejected"

    def _conflict(self, entry_id: str, fields: dict[Any, Any], message_id: str, why: str = "") -> str:
        reason = (
            f"duplicate_message_id: message_id {message_id!r} was already accepted with a "
            "different payload; this entry changed nothing"
        )
        if why:
            reason += f" (and it is invalid: {why})"
        dead_letter(
            self.client,
            self.settings.dead_stream,
            fields,
            reason,
            entry_id,
            self.stream,
            self.settings.dead_maxlen,
        )
        metrics.dead_letter(self.client, self.settings, "duplicate_message_id")
        log.warning("conflict", extra={"event": "conflict", "message_id": message_id, "entry_id": entry_id})
        return "conflict"

    def _publish(self, row: Any) -> None:
        result = result_from_row(row)
        publish_result(
            self.client,
            row.reply_to,
            result,
            self.settings.results_maxlen,
            default_stream=self.settings.results_stream,
        )
        # The webhook outbox queues the callbacks in the transaction that marks it published.
        ledger.mark_callback_sent(
            self.engine,
            row.idempotency_key,
            also=lambda conn: outbox.enqueue_results(conn, self.accounts, [result]),
        )

    @staticmethod
    def _ids(b: ledger.NewBooking) -> dict[str, Any]:
        return {"idempotency_key": b.idempotency_key, "provider": b.provider, "account": b.account}

    # --- the consumer loop -----------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            # From the start of the stream: entries added before the first intake ran count.
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- reading, bounded in bytes (worker/intake_read.py) ----------------------------------

    def _read(self) -> list[Entry]:
        """One read: entries within the size limit whole, up to intake_read_budget_bytes in
        all, and oversized ones as their sizes only (dead-lettered by _reject_oversized)."""
        budget = self.settings.intake_read_budget_bytes
        batch = self.settings.intake_batch
        now = time.monotonic()
        if now - self._last_reclaim > max(1.0, self.settings.intake_reclaim_idle_ms / 3000):
            self._last_reclaim = now
            # Entries of a consumer that died (or of ours, after a failure) that sat unacked
            # longer than the idle limit.
            claimed = self.reader.read("claim", batch, min_idle_ms=self.settings.intake_reclaim_idle_ms)
            if claimed.entries:
                return claimed.entries
        if self._own_pending:
            own = self.reader.read("own", batch)
            if own.entries:
                return own.entries
            self._own_pending = False
        first = self._wait_for_new(batch)
        entries = first.entries
        linger = self.settings.intake_linger_ms
        if entries and len(entries) < batch and first.seen_bytes < budget and linger > 0:
            time.sleep(linger / 1000)
            more = self.reader.read("new", batch - len(entries), budget_bytes=budget - first.seen_bytes)
            entries += more.entries
        return entries

    def _wait_for_new(self, batch: int) -> Read:
        """New entries, waiting up to intake_block_ms for some. A script cannot block, and a
        blocking XREADGROUP would bring an entry's body whatever its size: poll, quickly at
        first, then every IDLE_POLL_MAX_S."""
        deadline = time.monotonic() + self.settings.intake_block_ms / 1000
        pause = IDLE_POLL_MIN_S
        while True:
            got = self.reader.read("new", batch)
            left = deadline - time.monotonic()
            if got.entries or left <= 0:
                return got
            time.sleep(min(pause, left))
            pause = min(pause * 2, IDLE_POLL_MAX_S)

    def _reject_oversized(self, entry_id: str, big: Oversized) -> str:
        """An entry over the size limit, rejected from what the read told of it: its sizes and
        the first bytes of its message. The dead letter keeps those (the head cut before the
        payload and scrubbed), never the body, which stays in Redis until the bookings stream
        is trimmed."""
        limit = self.settings.max_message_bytes
        message = big.message_bytes
        what = f"its message is {message} bytes" if message is not None else "it has no message field"
        reason = (
            f"the entry is {big.size} bytes ({what}), more than the limit of {limit} bytes for a "
            f"message (and {limit + self.settings.intake_entry_slack_bytes} for the whole entry); "
            "it was not read"
        )
        summary = {
            "oversized_size": str(big.size),
            "oversized_fields": intake_read.describe_fields(big),
            "oversized_head": intake_read.safe_head(big.head),
        }
        bad = Rejected("too_large", reason, message_id=intake_read.message_id_in(big.head))
        return self._reject(entry_id, summary, bad)

    def run_once(self) -> int:
        """Read one batch and process it. Returns how many entries were acknowledged.

        The valid entries of a read are written in one transaction and sent in as few tasks
        as `task_batch` allows; the rest (rejects, resends, conflicts) take the one-by-one
        path. Entries are acknowledged together at the end, each only once its outcome is
        durable; on a Redis or database failure the rest stay pending and are read again."""
        entries = self._read()
        acked: list[str] = []
        try:
            self._run_batch(entries, acked)
        finally:
            if acked:
                self.client.xack(self.stream, self.group, *acked)
                self.processed += len(acked)
        return len(acked)

    def _run_batch(self, entries: list[Entry], acked: list[str]) -> None:
        fresh: list[tuple[str, dict[Any, Any], Accepted]] = []
        again: list[tuple[str, dict[Any, Any], Accepted]] = []  # a key seen earlier in this read
        seen: set[str] = set()
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if isinstance(fields, Oversized):
                self._guarded(eid, {}, partial(self._reject_oversized, eid, fields))
                acked.append(eid)
                continue
            verdict = self._guarded(eid, fields, partial(self._validate, fields))
            if isinstance(verdict, Accepted):
                (again if verdict.idempotency_key in seen else fresh).append((eid, fields, verdict))
                seen.add(verdict.idempotency_key)
                continue
            if isinstance(verdict, Rejected):
                self._guarded(eid, fields, partial(self._reject, eid, fields, verdict))
            acked.append(eid)  # rejected, or dead-lettered by the guard

        new_keys: list[str] = []
        if fresh:
            bookings = {ok.idempotency_key: ok.booking() for _e, _f, ok in fresh}
            try:
                created = ledger.create_queued_many(self.engine, list(bookings.values()))
            except Exception as exc:
                if is_transient(exc):
                    self._own_pending = True
                    raise
                # Not an outage: the database refuses something in this read (and will again).
                # One transaction per entry finds it; only that entry is dead-lettered.
                log.warning(
                    "batch insert refused; one entry at a time",
                    extra={"event": "batch_fallback", "error": error_label(exc), "where": where(exc)},
                )
                enqueued: set[str] = set()
                for eid, fields, ok in fresh + again:
                    key = ok.idempotency_key
                    step = partial(self._accept_one, eid, fields, ok, key in enqueued)
                    if self._guarded(eid, fields, step) == "accepted":
                        enqueued.add(key)
                    acked.append(eid)
                return
            new_keys = [ok.idempotency_key for _e, _f, ok in fresh if ok.idempotency_key in created]
            if new_keys:
                try:
                    self._send_new(new_keys, [ok for _e, _f, ok in fresh])
                except Exception as exc:
                    # Rows written, tasks not sent: the entries are read again and, finding
                    # their rows queued, enqueued again (keys are ours: nothing to blame on
                    # an entry, so any failure here is waited out).
                    self._own_pending = True
                    if is_transient(exc):
                        raise
                    log.error("enqueue failed", extra={"event": "enqueue_failed", "error": error_label(exc)})
                    raise
            for eid, fields, ok in fresh:
                if ok.idempotency_key in created:
                    ids = self._ids(bookings[ok.idempotency_key])
                    log.info("accepted", extra={"event": "accepted", **ids})
                    acked.append(eid)
                else:
                    again.append((eid, fields, ok))
        sent = set(new_keys)
        for eid, fields, ok in again:
            just_sent = ok.idempotency_key in sent
            self._guarded(eid, fields, partial(self._existing, eid, fields, ok, just_sent))
            acked.append(eid)

    def _validate(self, fields: dict[Any, Any]) -> Accepted | Rejected:
        return validate_entry(fields, self.settings, self.accounts)

    def _guarded(self, eid: str, fields: dict[Any, Any], step: Callable[[], Any]) -> Any:
        """Run one entry's step. An outage propagates (the entry stays pending); any other
        error dead-letters this entry, so a bug never turns one entry into a crash loop."""
        try:
            return step()
        except Exception as exc:
            if is_transient(exc):
                self._own_pending = True
                raise
            # Type and place only: the message of a driver error quotes the entry's data.
            log.error(
                "internal error on entry",
                extra={
                    "event": "internal_error",
                    "entry_id": eid,
                    "error": error_label(exc),
                    "where": where(exc),
                },
            )
            try:
                dead_letter(
                    self.client,
                    self.settings.dead_stream,
                    fields,
                    f"internal_error: {error_label(exc)}",
                    eid,
                    self.stream,
                    self.settings.dead_maxlen,
                )
            except Exception as dead_exc:
                if is_transient(dead_exc):
                    self._own_pending = True
                    raise
                # Even the dead letter fails on this entry: acknowledge it anyway (it stays
                # in the stream under its id for an operator) rather than loop on it.
                log.critical(
                    "entry could not be dead-lettered; acknowledged, see the stream",
                    extra={"event": "dead_letter_failed", "entry_id": eid},
                )
            metrics.dead_letter(self.client, self.settings, "internal_error")
            return None

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        group_ready = False
        next_trim = 0.0
        while not stop.is_set():
            try:
                if not group_ready:
                    self.ensure_group()
                    group_ready = True
                self.run_once()
                self.heartbeat.beat()
                backoff = 0.5
                trim_every = self.settings.intake_trim_interval_s
                if trim_every > 0 and time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + trim_every
                    try:  # housekeeping: a failure here must never stop intake
                        retention.trim_processed(self.client, self.stream)
                        # Intake writes the dead letters; its XADDs carry no cap of their own.
                        retention.cap_stream(
                            self.client, self.settings.dead_stream, self.settings.dead_maxlen
                        )
                    except Exception:
                        log.exception("trimming the streams failed", extra={"event": "trim_failed"})
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty: the group is gone
                    log.warning("consumer group missing; creating it again", extra={"event": "nogroup"})
                    group_ready = False
                    continue
                log.error("redis error: %s", exc, extra={"event": "redis_error"})
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except TRANSIENT as exc:
                log.warning(
                    "waiting for redis/database: %s",
                    type(exc).__name__,
                    extra={"event": "unavailable", "error": error_label(exc)},
                )
                group_ready = False
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except Exception as exc:
                # Entries are judged one by one, so this is a bug outside any entry: keep the
                # loop alive (a dead intake thread stops every booking) and say where.
                log.error(
                    "intake loop error",
                    extra={"event": "loop_error", "error": error_label(exc), "where": where(exc)},
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
        self.heartbeat.clear()
