"""Bulk re-issuance: re-drive what failed, or re-run a day's export, without a second ticket.

A run selects rows (or reads a JSONL export of envelopes), and a feeder re-drives them with
their ORIGINAL idempotency key, a window at a time, on the bulk queue: a ticket that was in fact
created is found by the provider's replay, duplicate answer or lookup, not created again. Rows
already issued are skipped. Each re-driven row is stamped with the run's id, so a stopped run
resumes where it was (rows of this run are never driven twice) and the report counts only its
own rows. `new_generation` deliberately issues new tickets under a new key (generation + 1),
only where the provider cannot mistake it for the old booking.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine, and_, func, insert, or_, select, update

from schemas.keys import idempotency_key
from schemas.statuses import ACTIVE_STATUSES, FINAL_STATUSES, Status
from schemas.table import ReissueRun, TicketIssuance
from worker import ledger
from worker.db import writing
from worker.ledger import C, T, utcnow
from worker.settings import AccountConfig, Settings
from worker.validation import Accepted, validate_entry

R = ReissueRun.__table__  # type: ignore[attr-defined]
REDRIVABLE = frozenset({Status.FAILED, Status.NEEDS_REVIEW})
_DURATION = re.compile(r"^(\d+)([smhd])$")


class ReissueRefused(ValueError):
    """The run would not be safe; nothing was changed."""


@dataclass
class Selection:
    provider: str | None = None
    account: str | None = None
    statuses: list[str] = field(default_factory=lambda: [Status.FAILED.value])
    retryable_only: bool = False
    since: str | None = None  # ISO 8601 or a duration back from now: 24h, 7d
    until: str | None = None
    limit: int | None = None
    new_generation: bool = False

    @classmethod
    def from_spec(cls, spec: str) -> Selection:
        """`status=failed retryable=true since=24h provider=eguma` (the nightly setting)."""
        sel = cls()
        for part in spec.split():
            name, _, value = part.partition("=")
            if name == "status":
                sel.statuses = value.split(",")
            elif name == "retryable":
                sel.retryable_only = value.lower() in ("1", "true", "yes")
            elif name in ("provider", "account", "since", "until"):
                setattr(sel, name, value)
            elif name == "limit":
                sel.limit = int(value)
            else:
                raise ValueError(f"unknown selection key {name!r} in {spec!r}")
        sel.validate()
        return sel

    def validate(self) -> None:
        bad = set(self.statuses) - {s.value for s in Status}
        if bad:
            raise ValueError(f"unknown status {', '.join(sorted(bad))}")
        for bound in (self.since, self.until):
            if bound is not None:
                _when(bound)

    def where(self) -> Any:
        conds = [C.status.in_(self.statuses)]
        if self.provider:
            conds.append(C.provider == self.provider)
        if self.account:
            conds.append(C.account == self.account)
        if self.retryable_only:
            conds.append(C.error_retryable.is_(True))
        if self.since:
            conds.append(C.created_at >= _when(self.since))
        if self.until:
            conds.append(C.created_at < _when(self.until))
        return and_(*conds)


def _when(value: str) -> datetime:
    m = _DURATION.match(value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return utcnow() - timedelta(**{unit: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither ISO 8601 nor a duration like 24h or 7d") from None
    return ledger.as_utc(parsed) or parsed


def new_generation_refusal(row: TicketIssuance) -> str | None:
    """Why a new generation of this row would not be safe, or None."""
    if row.provider == "remypass":
        return (
            "remypass: bookingId is unique per account at RemyPass; a new generation would be "
            "answered 'duplicate' (and reconciled as the old ticket), never a new ticket"
        )
    if row.provider in ("fourvenues", "fourvenues_channels"):
        tickets = (row.payload or {}).get("tickets") or []
        if any(isinstance(t, dict) and t.get("qr_code") for t in tickets):
            return (
                f"{row.provider}: the producer set qr_codes, so a new generation would send the "
                "same codes again"
            )
    if row.payload is None:
        return "the message was rejected: there is no valid payload to issue"
    return None


@dataclass
class Progress:
    total: int
    done: int
    by_status: dict[str, int]
    rate: float
    eta_s: float | None


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
        self.run_id = run_id or f"run-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.selection = selection or Selection()
        self.skipped: Counter[str] = Counter()
        self.fed = 0
        self.started = time.monotonic()
        self._last_id = 0
        self._lock_key = f"ticketrelay:reissue:lock:{self.run_id}"
        self._owner = uuid.uuid4().hex

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
        now = utcnow()
        with writing(self.engine) as conn:
            found = conn.execute(select(R).where(R.c.run_id == self.run_id)).mappings().first()
            if found is not None:
                self.selection = Selection(**found["selection"])
                conn.execute(
                    update(R).where(R.c.run_id == self.run_id).values(state="running", updated_at=now)
                )
                return True
            conn.execute(
                insert(R).values(
                    run_id=self.run_id,
                    created_at=now,
                    updated_at=now,
                    state="running",
                    selection=asdict(self.selection),
                    total=0,
                )
            )
        return False

    def lock(self) -> bool:
        """One feeder per run, on any host; refreshed while feeding, gone 60 s after a crash."""
        if self.redis.set(self._lock_key, self._owner, nx=True, ex=60):
            return True
        return self.redis.get(self._lock_key) == self._owner.encode()

    def _refresh_lock(self) -> None:
        self.redis.set(self._lock_key, self._owner, xx=True, ex=60)

    def unlock(self) -> None:
        if self.redis.get(self._lock_key) == self._owner.encode():
            self.redis.delete(self._lock_key)

    # --- selection ---------------------------------------------------------------------------

    def candidates_count(self) -> dict[tuple[str, str], int]:
        """What the selection matches now and this run has not driven yet: (provider, status)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(C.provider, C.status, func.count())
                .where(self.selection.where(), self._not_driven())
                .group_by(C.provider, C.status)
            )
            return {(p, s): n for p, s, n in rows}

    def _not_driven(self) -> Any:
        return or_(C.reissue_run.is_(None), C.reissue_run != self.run_id)

    def check_safe(self) -> None:
        if not self.selection.new_generation:
            return
        with self.engine.connect() as conn:
            rows = conn.execute(select(T).where(self.selection.where(), self._not_driven())).mappings()
            refusals = Counter(
                r for r in (new_generation_refusal(TicketIssuance(**row)) for row in rows) if r is not None
            )
        if refusals:
            lines = "; ".join(f"{n} booking(s): {why}" for why, n in refusals.items())
            raise ReissueRefused(
                f"--new-generation refused, nothing changed: {lines}. "
                "Narrow the selection (--provider) to exclude them."
            )

    def _next_batch(self, n: int) -> list[TicketIssuance]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T)
                .where(self.selection.where(), self._not_driven(), C.id > self._last_id)
                .order_by(C.id)
                .limit(n)
            ).mappings()
            batch = [TicketIssuance(**r) for r in rows]
        if batch:
            self._last_id = batch[-1].id or self._last_id
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
        now = utcnow()
        with writing(self.engine) as conn:
            changed = conn.execute(
                update(T)
                .where(C.idempotency_key == row.idempotency_key, C.status == row.status)
                .values(
                    status=Status.QUEUED.value,
                    reissue_run=self.run_id,
                    attempts_base=C.attempts,
                    lease_owner=None,
                    lease_until=None,
                    next_attempt_at=None,
                    completed_at=None,
                    callback_sent_at=None,
                    updated_at=now,
                )
            ).rowcount
        if not changed:
            return "skipped_changed"
        self.enqueue(row.idempotency_key)
        return "redriven"

    def _new_generation(self, row: TicketIssuance) -> str:
        why = new_generation_refusal(row)
        if why is not None:  # the selection moved since check_safe: still never unsafe
            return "refused"
        with self.engine.connect() as conn:
            top = conn.execute(
                select(func.max(C.generation)).where(
                    C.provider == row.provider, C.account == row.account, C.message_id == row.message_id
                )
            ).scalar_one()
        gen = int(top) + 1
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
        with writing(self.engine) as conn:
            conn.execute(
                update(T)
                .where(C.idempotency_key.in_([key, row.idempotency_key]))
                .values(reissue_run=self.run_id)
            )
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
        booking = ok.booking()
        if ledger.create_queued(self.engine, booking):
            with writing(self.engine) as conn:
                conn.execute(
                    update(T).where(C.idempotency_key == ok.idempotency_key).values(reissue_run=self.run_id)
                )
            self.enqueue(ok.idempotency_key)
            self.fed += 1
            return "created"
        row = ledger.get(self.engine, ok.idempotency_key)
        assert row is not None
        if row.payload_sha256 != ok.payload_sha256:
            return "skipped_different_payload"
        if row.reissue_run == self.run_id:
            return "skipped_already_in_run"
        outcome = self.drive(row)
        if outcome == "redriven":
            self.fed += 1
        return outcome

    def _in_flight(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(T)
                    .where(C.reissue_run == self.run_id, C.status.in_(list(ACTIVE_STATUSES)))
                ).scalar_one()
            )

    def _wait_for_room(self, stop: threading.Event | None = None) -> None:
        while self._in_flight() >= self.settings.reissue_window:
            if stop is not None and stop.is_set():
                return
            self._refresh_lock()
            time.sleep(0.2)

    def feed(self, stop: threading.Event, on_progress: Callable[[Progress], None] | None = None) -> bool:
        """Feed the selection a window at a time until everything selected is final. Returns
        False when stopped early (resume later with the same run id)."""
        counts = self.candidates_count()
        total = self._count_of_run() + sum(
            n for (_p, st), n in counts.items() if self.selection.new_generation or st in REDRIVABLE
        )
        self._set_total(total)
        exhausted = False
        while not stop.is_set():
            self._refresh_lock()
            room = self.settings.reissue_window - self._in_flight()
            if room > 0 and not exhausted:
                batch = self._next_batch(room)
                exhausted = not batch
                self._buffer = []
                try:
                    for row in batch:
                        outcome = self.drive(row)
                        if outcome in ("redriven", "new_generation"):
                            self.fed += 1
                        else:
                            self.skipped[outcome] += 1
                finally:
                    # Rows already marked queued but not sent (a crash here) are re-driven
                    # by the sweeper once stale, like any queued row.
                    self._flush()
            progress = self.progress(total)
            if on_progress is not None:
                on_progress(progress)
            if exhausted and self._in_flight() == 0:
                return True
            time.sleep(0.2)
        return False

    def wait_until_final(
        self,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        total: int | None = None,
    ) -> bool:
        total = total if total is not None else self._count_of_run()
        self._set_total(total)
        while not stop.is_set():
            if on_progress is not None:
                on_progress(self.progress(total))
            if self._in_flight() == 0:
                return True
            time.sleep(0.2)
        return False

    def _count_of_run(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(T)
                    .where(
                        C.reissue_run == self.run_id,
                        C.generation == 0
                        if not self.selection.new_generation
                        else C.reissue_run == self.run_id,
                    )
                ).scalar_one()
            )

    def _set_total(self, total: int) -> None:
        with writing(self.engine) as conn:
            conn.execute(update(R).where(R.c.run_id == self.run_id).values(total=total, updated_at=utcnow()))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(C.status, func.count()).where(C.reissue_run == self.run_id).group_by(C.status)
            )
            return {s: n for s, n in rows}

    def progress(self, total: int) -> Progress:
        by_status = self.counts()
        done = sum(n for s, n in by_status.items() if s in FINAL_STATUSES)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 and total >= done else None
        return Progress(total=total, done=done, by_status=by_status, rate=rate, eta_s=eta)

    def finish(self, completed: bool) -> dict[str, Any]:
        """Write and return the report: counts by provider and outcome, duration, failures."""
        with self.engine.connect() as conn:
            by = conn.execute(
                select(C.provider, C.status, func.count())
                .where(C.reissue_run == self.run_id)
                .group_by(C.provider, C.status)
            )
            by_provider: dict[str, dict[str, int]] = {}
            for provider, status, n in by:
                by_provider.setdefault(provider, {})[status] = n
            failures = conn.execute(
                select(C.provider, C.error_type, C.error_message, func.count())
                .where(
                    C.reissue_run == self.run_id,
                    C.status.in_([Status.FAILED.value, Status.NEEDS_REVIEW.value]),
                )
                .group_by(C.provider, C.error_type, C.error_message)
                .order_by(func.count().desc())
                .limit(20)
            )
            failure_list = [
                {"provider": p, "error_type": t, "reason": m, "count": n} for p, t, m, n in failures
            ]
        report = {
            "run_id": self.run_id,
            "state": "done" if completed else "stopped",
            "selection": asdict(self.selection),
            "duration_s": round(time.monotonic() - self.started, 1),
            "driven": self.fed,
            "skipped": dict(self.skipped),
            "by_provider": by_provider,
            "failures": failure_list,
        }
        with writing(self.engine) as conn:
            conn.execute(
                update(R)
                .where(R.c.run_id == self.run_id)
                .values(
                    state=report["state"],
                    report=json.loads(json.dumps(report, default=str)),
                    updated_at=utcnow(),
                    finished_at=utcnow() if completed else None,
                )
            )
        return report


def running_runs(engine: Engine) -> list[dict[str, Any]]:
    """Runs in progress with their counts by status, for `ticketrelay status` and metrics."""
    with engine.connect() as conn:
        runs = conn.execute(select(R.c.run_id, R.c.total, R.c.created_at).where(R.c.state == "running")).all()
        out = []
        for run_id, total, created in runs:
            rows = conn.execute(
                select(C.status, func.count()).where(C.reissue_run == run_id).group_by(C.status)
            )
            out.append({"run_id": run_id, "total": total, "started": created, "by_status": dict(rows.all())})
        return out
