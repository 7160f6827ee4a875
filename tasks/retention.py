"""ticketrelay.retention: drops payloads and rows past their retention and trims the dead and
results streams by age (worker/retention.py), run by beat. Returns counts only."""

from __future__ import annotations

from worker import retention
from worker.app import RETENTION_TASK, app
from worker.runtime import deps


# acks_late off: a run lost with its worker is simply redone by the next beat; every step is
# a bounded statement that is safe to repeat.
@app.task(name=RETENTION_TASK, acks_late=False)
def apply_retention() -> dict[str, int]:
    d = deps()
    return retention.run_retention(d.engine, d.redis, d.settings).as_dict()
