"""The Celery tasks: thin wrappers over worker.issuing. Imported by the worker through the
app's `include`, never by the worker package itself."""

from pathlib import Path

import worker

_ROOT = Path(__file__).resolve().parent.parent
if Path(worker.__file__).resolve().parent.parent != _ROOT:  # pragma: no cover
    raise ImportError(f"`worker` was imported from {worker.__file__}, not from {_ROOT}")

from tasks.cancel import cancel_booking  # noqa: E402
from tasks.issue import issue_ticket, sweep  # noqa: E402
from tasks.reissue import reissue_nightly  # noqa: E402
from tasks.retention import apply_retention  # noqa: E402
from tasks.webhooks import deliver_webhooks  # noqa: E402

__all__ = [
    "apply_retention",
    "cancel_booking",
    "deliver_webhooks",
    "issue_ticket",
    "reissue_nightly",
    "sweep",
]
