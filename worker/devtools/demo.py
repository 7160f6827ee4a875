"""Sample bookings of every provider, for `ticketrelay dev --demo` and the quickstart."""

from __future__ import annotations

import time
from typing import Any

from worker.devtools.sandbox.samples import sample_envelopes


def demo_envelopes(run_id: str | None = None) -> list[dict[str, Any]]:
    """The sample bookings (sandbox/samples.py, also the files in examples/) under ids new per run."""
    return sample_envelopes(run_id or time.strftime("%Y%m%dT%H%M%S"), "demo")
