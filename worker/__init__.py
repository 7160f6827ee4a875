"""ticketrelay's runtime: everything that talks to the outside world.

`tasks`, `schemas` and `worker` are generic top-level names; a stray package of the same name
installed in site-packages must never be picked up instead of ours.
"""

from pathlib import Path

import schemas

_ROOT = Path(__file__).resolve().parent.parent
if Path(schemas.__file__).resolve().parent.parent != _ROOT:  # pragma: no cover
    raise ImportError(
        f"`schemas` was imported from {schemas.__file__}, not from {_ROOT}: "
        "run ticketrelay with the repository root first on PYTHONPATH"
    )
