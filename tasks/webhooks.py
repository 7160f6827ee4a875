"""ticketrelay.deliver_webhooks: the webhook deliverer (worker/webhooks/deliver.py), run by
beat every few seconds. Returns counts only."""

from __future__ import annotations

from worker.app import app
from worker.runtime import deps
from worker.webhooks.deliver import deliver_due, purge_delivered, shared_client
from worker.webhooks.schedule import DELIVER_WEBHOOKS_TASK


# acks_late off: a run lost with its worker is simply the next beat's run; the leases in the
# outbox, not the broker, keep two runs from sending the same entry.
@app.task(name=DELIVER_WEBHOOKS_TASK, acks_late=False)
def deliver_webhooks() -> dict[str, int]:
    d = deps()
    report = deliver_due(d.engine, d.settings, d.accounts, shared_client(d.settings)).as_dict()
    return {**report, "purged": purge_delivered(d.engine, d.settings)}
