"""Run: feeds a selection (or an export) to the workers a window at a time, as batch tasks on
the bulk queue, and never lets more than `reissue_window` rows of the run be in flight."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import redis
from sqlalchemy import Engine

from schemas.keys import idempotency_key
from schemas.statuses import Status
from schemas.table import TicketIssuance
from worker import ledger
from worker.ops.reissue.report import Progress, build_report, progress
from worker.ops.reissue.selection import (
    PAYLOAD_GONE,
    REDRIVABLE,
    ReissueRefused,
    Selection,
    new_generation_refusal,
)
from worker.ops.reissue.store import RunStore
from worker.settings import AccountConfig, Settings
from worker.validation import Accepted, validate_entry

_LOCK_TTL_S = 60
_POLL_S = 0.2


class Run:
    def __init__(
        self,
        engine: Engine,
        client: redis.Redis,
        settings: Settings,
        enqueue: Callable[[str], None],
        run_id: str | None = None,
        selection: Selection | None = None,
        enqueue_many: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.engine, self.redis, self.settings = engine, client, settings
        self._enqueue_one = enqueue
        self._enqueue_many = enqueue_many
        # While feeding a window, keys are collected and sent as batch tasks at its end.
        self._buffer: list[str] | None = None
        self.run_id = run_id or f"run-{ledger.utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.store = RunStore(engine, self.run_id)
        self.selection = selection or Selection()
        self.skipped: Counter[str] = Counter()
        self.fed = 0
        self.started = time.monotonic()
        self._last_id = 0
        self._taken = 0  # rows taken from the selection, for its limit
        self._lock_key = f"ticketrelay:reissue:lock:{self.run_id}"
        self._owner = uuid.uuid4().hex

    # --- sending -----------------------------------------------------------------------------

    def enqueue(self, key: str) -> None:
        if self._buffer is not None and self._enqueue_many is not None:
            self._buffer.append(key)
        else:
            self._enqueue_one(key)

    def _flush(self) -> None:
        keys, self._buffer = self._buffer or [], None
        if keys and self._enqueue_many is not None:
            self._enqueue_many(keys)

    # --- bookkeeping -------------------------------------------------------------------------

    def load_or_create(self) -> bool:
        """Creates the run's row, or loads its selection to resume it. True when resuming."""
        stored = self.store.load_or_create(self.selection)
        if stored is not None:
            self.selection = stored
            return True
        return False

    def lock(self) -> bool:
        """One feeder per run, on any host; refreshed while feeding, gone 60 s after a crash."""
        if self.redis.set(self._lock_key, self._owner, nx=True, ex=_LOCK_TTL_S):
            return True
        return self.redis.get(self._lock_key) == self._owner.encode()

    def _refresh_lock(self) -> None:
        self.redis.set(self._lock_key, self._owner, xx=True, ex=_LOCK_TTL_S)

    def unlock(self) -> None:
        if self.redis.get(self._lock_key) == self._owner.encode():
            self.redis.delete(self._lock_key)

    # --- selection ---------------------------------------------------------------------------

    def candidates_count(self) -> dict[tuple[str, str], int]:
        return self.store.candidates_count(self.selection)

    def check_safe(self) -> None:
        if not self.selection.new_generation:
            return
        refusals = Counter(
            why
            for why in map(new_generation_refusal, self.store.all_candidates(self.selection))
            if why is not None
        )
        if refusals:
            lines = "; ".join(f"{n} booking(s): {why}" for why, n in refusals.items())
            raise ReissueRefused(
                f"--new-generation refused, nothing changed: {lines}. "
                "Narrow the selection (--provider) to exclude them."
            )

    def _next_batch(self, n: int) -> list[TicketIssuance]:
        if self.selection.limit is not None:
            n = min(n, self.selection.limit - self._taken)
            if n <= 0:
                return []
        batch = self.store.next_batch(self.selection, self._last_id, n)
        if batch:
            self._last_id = batch[-1].id or self._last_id
            self._taken += len(batch)
        return batch

    # --- driving -----------------------------------------------------------------------------

    def drive(self, row: TicketIssuance) -> str:
        """Re-drive one row (or issue its next generation). Returns what happened."""
        if self.selection.new_generation:
            return self._new_generation(row)
        if row.status == Status.ISSUED:
            return "skipped_issued"
        if row.status not in REDRIVABLE:
            return f"skipped_{row.status}"
        if row.payload is None:
            # Dropped by retention (payload_retention_days) or erased on request: there is
            # nothing to send; the provider would answer an empty request with an error.
            return PAYLOAD_GONE
        if not self.store.requeue(row):
            return "skipped_changed"
        self.enqueue(row.idempotency_key)
        return "redriven"

    def _new_generation(self, row: TicketIssuance) -> str:
        if new_generation_refusal(row) is not None:  # the selection moved since check_safe
            return "refused"
        gen = self.store.next_generation(row)
        key = idempotency_key(row.provider, row.account, row.message_id, gen)
        booking = ledger.NewBooking(
            idempotency_key=key,
            message_id=row.message_id,
            provider=row.provider,
            account=row.account,
            generation=gen,
            payload=row.payload,
            payload_sha256=row.payload_sha256,
            reply_to=row.reply_to,
            metadata=row.message_metadata or {},
        )
        if not ledger.create_queued(self.engine, booking):
            return "skipped_exists"
        # Stamp the old row too, so a resumed run does not make a third generation of it.
        self.store.stamp([key, row.idempotency_key])
        self.enqueue(key)
        return "new_generation"

    def drive_envelopes(self, lines: Iterable[str], accounts: dict[tuple[str, str], AccountConfig]) -> None:
        """A booking system's export: each line goes through intake's validation; new bookings
        are created, failed ones re-driven with their original key, issued ones skipped."""
        for line in lines:
            if not line.strip():
                continue
            verdict = validate_entry({"message": line.encode()}, self.settings, accounts)
            if not isinstance(verdict, Accepted):
                self.skipped[f"invalid_{verdict.error_type}"] += 1
                continue
            self._wait_for_room()
            self.skipped[self._drive_envelope(verdict)] += 1

    def _drive_envelope(self, ok: Accepted) -> str:
        if ledger.create_queued(self.engine, ok.booking()):
            self.store.stamp([ok.idempotency_key])
            self.enqueue(ok.idempotency_key)
            self.fed += 1
            return "created"
        row = ledger.get(self.engine, ok.idempotency_key)
        assert row is not None
        if row.payload_sha256 != ok.payload_sha256:
            return "skipped_different_payload"
        if row.reissue_run == self.run_id:
            return "skipped_already_in_run"
        if row.payload is None and row.status != Status.REJECTED:
            # Its payload was dropped by retention: the export brings the same one back.
            payload = ok.booking().payload or {}
            ledger.restore_payload(self.engine, row.idempotency_key, payload, ok.payload_sha256)
            row = ledger.get(self.engine, ok.idempotency_key) or row
        outcome = self.drive(row)
        if outcome == "redriven":
            self.fed += 1
        return outcome

    def _wait_for_room(self, stop: threading.Event | None = None) -> None:
        while self.store.in_flight() >= self.settings.reissue_window:
            if stop is not None and stop.is_set():
                return
            self._refresh_lock()
            time.sleep(_POLL_S)

    def _feed_window(self, room: int) -> bool:
        """Drive up to `room` more rows; False when the selection is exhausted."""
        batch = self._next_batch(room)
        self._buffer = []
        try:
            for row in batch:
                outcome = self.drive(row)
                if outcome in ("redriven", "new_generation"):
                    self.fed += 1
                else:
                    self.skipped[outcome] += 1
        finally:
            # Rows already marked queued but not sent (a crash here) are re-driven by the
            # sweeper once stale, like any queued row.
            self._flush()
        return bool(batch)

    def _selected_total(self) -> int:
        counts = self.candidates_count()
        todo = sum(n for (_p, st), n in counts.items() if self.selection.new_generation or st in REDRIVABLE)
        if self.selection.limit is not None:
            todo = min(todo, self.selection.limit)
        return self.store.count_of_run(self.selection.new_generation) + todo

    def feed(self, stop: threading.Event, on_progress: Callable[[Progress], None] | None = None) -> bool:
        """Feed the selection a window at a time until everything selected is final. Returns
        False when stopped early (resume later with the same run id)."""
        total = self._selected_total()
        self.store.set_total(total)
        exhausted = False
        while not stop.is_set():
            self._refresh_lock()
            room = self.settings.reissue_window - self.store.in_flight()
            if room > 0 and not exhausted:
                exhausted = not self._feed_window(room)
            if on_progress is not None:
                on_progress(self.progress(total))
            if exhausted and self.store.in_flight() == 0:
                return True
            time.sleep(_POLL_S)
        return False

    def wait_until_final(
        self,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        total: int | None = None,
    ) -> bool:
        total = total if total is not None else self.store.count_of_run(self.selection.new_generation)
        self.store.set_total(total)
        while not stop.is_set():
            if on_progress is not None:
                on_progress(self.progress(total))
            if self.store.in_flight() == 0:
                return True
            time.sleep(_POLL_S)
        return False

    # --- reporting ---------------------------------------------------------------------------

    def progress(self, total: int) -> Progress:
        return progress(self.store.counts(), total, self.started)

    def finish(self, completed: bool) -> dict[str, Any]:
        """Write and return the report: counts by provider and outcome, duration, failures."""
        report = build_report(self.store, self.selection, completed, self.started, self.fed, self.skipped)
        self.store.save_report(report, completed)
        return report
