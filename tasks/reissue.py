"""ticketrelay.reissue_nightly: the nightly bulk re-issuance, scheduled by beat."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from worker.app import REISSUE_TASK, app, enqueue_issue, enqueue_issue_many
from worker.ops.reissue import Run, Selection
from worker.runtime import deps

log = logging.getLogger("ticketrelay.reissue")


@app.task(name=REISSUE_TASK, acks_late=True)
def reissue_nightly() -> dict[str, object]:
    d = deps()
    # One run per day: a redelivered or re-triggered task resumes it; the lock keeps a second
    # copy (Redis redelivers a task that runs longer than the visibility timeout) from feeding.
    run = Run(
        d.engine,
        d.redis,
        d.settings,
        lambda key: enqueue_issue(key, bulk=True),
        run_id=f"nightly-{datetime.now(UTC):%Y%m%d}",
        selection=Selection.from_spec(d.settings.reissue_selection),
        enqueue_many=lambda keys: enqueue_issue_many(keys, bulk=True),
    )
    if not run.lock():
        log.info(
            "nightly reissue already running elsewhere", extra={"event": "reissue_locked", "run": run.run_id}
        )
        return {"run_id": run.run_id, "state": "running elsewhere"}
    try:
        run.load_or_create()
        completed = run.feed(threading.Event())
        report = run.finish(completed)
    finally:
        run.unlock()
    log.info(
        "nightly reissue finished",
        extra={
            "event": "reissue_report",
            "run": run.run_id,
            "driven": report["driven"],
            "by_provider": report["by_provider"],
        },
    )
    # Only counts and ids: the report holds no personal data (Flower shows return values).
    return {"run_id": run.run_id, "state": report["state"], "driven": report["driven"]}
