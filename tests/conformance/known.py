"""Adapter bugs the conformance suite found and the adapters have not fixed yet: each one a
precise condition on (combination, case), so a strict xfail turns red the moment a fix lands
(then its entry goes). docs/providers.md ("Adapter bugs found") describes each."""

from __future__ import annotations

from tests.conformance.combos import Combination
from tests.conformance.scenarios import Case

FOURVENUES_OTHER_PURCHASE = (
    "Fourvenues Integrations: when sent qr_codes are not kept, a retry whose first request never "
    "reached Fourvenues matches the same customer's other purchase in the event listing (by names "
    "and emails) and reports its tickets as this booking's (docs/providers.md, bug 1)"
)
EGUMA_RELEASED_KEY = (
    "e-guma with failures=release: an after-commit 5xx frees the Idempotency-Key and the retry "
    "books a second time (docs/providers.md, bug 2)"
)
EGUMA_OTHER_ORDER = (
    "e-guma past 72 h with nothing in doubt: orders.json reconciliation takes the same customer's "
    "other order for this booking instead of sending it (docs/providers.md, bug 3)"
)


def known_bug(combo: Combination, case: Case) -> str | None:
    """Why this (combination, case) is expected to break a rule today, or None."""
    switches = combo.switch_map
    if (
        combo.provider == "fourvenues"
        and switches["sent_qr_code"] == "ignored"
        and combo.start == "warm"
        and case.name in ("timeout_unsent", "killed_unsent")
    ):
        return FOURVENUES_OTHER_PURCHASE
    if combo.provider == "eguma":
        if switches["failures"] == "release" and case.name in ("500", "502", "503"):
            return EGUMA_RELEASED_KEY
        if combo.start == "warm" and case.name == "72h_after_429":
            return EGUMA_OTHER_ORDER
    return None
