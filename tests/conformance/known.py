"""Adapter bugs the conformance suite found and the adapters have not fixed yet: each one a
precise condition on (combination, case), so a strict xfail turns red the moment a fix lands
(then its entry goes). docs/providers.md ("Adapter bugs found") describes each."""

from __future__ import annotations

from tests.conformance.combos import Combination
from tests.conformance.scenarios import Case

EGUMA_RELEASED_KEY = (
    "e-guma with failures=release: an after-commit 5xx frees the Idempotency-Key and the retry "
    "books a second time (docs/providers.md, bug 2)"
)


def known_bug(combo: Combination, case: Case) -> str | None:
    """Why this (combination, case) is expected to break a rule today, or None."""
    switches = combo.switch_map
    if combo.provider == "eguma" and switches["failures"] == "release" and case.name in ("500", "502", "503"):
        return EGUMA_RELEASED_KEY
    return None
