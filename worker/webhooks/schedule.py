"""The beat entry of the deliverer (worker/app.py adds it to its schedule)."""

from __future__ import annotations

from worker.settings import Settings

DELIVER_WEBHOOKS_TASK = "ticketrelay.deliver_webhooks"


def beat_entries(settings: Settings) -> dict[str, dict[str, object]]:
    # expires: a run beat sent while no worker was free is dropped, not piled up; the next
    # one comes a few seconds later and takes whatever is due.
    return {
        "deliver-webhooks": {
            "task": DELIVER_WEBHOOKS_TASK,
            "schedule": settings.callback_interval_s,
            "options": {"expires": settings.callback_interval_s},
        }
    }
