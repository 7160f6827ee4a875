"""Bulk re-issuance: re-drive what failed, or re-run a day's export, without a second ticket.

A run selects rows (or reads a JSONL export of envelopes), and a feeder re-drives them with
their ORIGINAL idempotency key, a window at a time, on the bulk queue: a ticket that was in fact
created is found by the provider's replay, duplicate answer or lookup, not created again. Rows
already issued are skipped. Each re-driven row is stamped with the run's id, so a stopped run
resumes where it was (rows of this run are never driven twice) and the report counts only its
own rows. `new_generation` deliberately issues new tickets under a new key (generation + 1),
only where the provider cannot mistake it for the old booking.

    selection.py  what a run selects, and when a new generation would be unsafe
    store.py      the run's row in reissue_runs; the rows it drives (through worker.ledger)
    feeder.py     Run: the lock, the windows, the batch tasks on the bulk queue
    report.py     progress while it runs, the summary at its end
"""

from worker.ops.reissue.feeder import Run
from worker.ops.reissue.report import Progress
from worker.ops.reissue.selection import REDRIVABLE, ReissueRefused, Selection, new_generation_refusal
from worker.ops.reissue.store import RunStore, running_runs

__all__ = [
    "REDRIVABLE",
    "Progress",
    "ReissueRefused",
    "Run",
    "RunStore",
    "Selection",
    "new_generation_refusal",
    "running_runs",
]
