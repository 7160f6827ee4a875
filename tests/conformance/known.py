"""Adapter bugs the conformance suite found and the adapters have not fixed yet: each one a
precise condition on (combination, case), so a strict xfail turns red the moment a fix lands
(then its entry goes)."""

from __future__ import annotations

from tests.conformance.combos import Combination
from tests.conformance.scenarios import Case


def known_bug(combo: Combination, case: Case) -> str | None:
    """Why this (combination, case) is expected to break a rule today, or None."""
    return None
