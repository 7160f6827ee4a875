"""The statuses a booking moves through (CONTRACT.md section 2)."""

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    RETRYING = "retrying"
    ISSUED = "issued"
    FAILED = "failed"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"
    CANCELLED = "cancelled"  # 1.1: voided at the provider by a cancel message


FINAL_STATUSES: frozenset[str] = frozenset(
    {Status.ISSUED, Status.FAILED, Status.REJECTED, Status.NEEDS_REVIEW}
)
ACTIVE_STATUSES: frozenset[str] = frozenset({Status.QUEUED, Status.IN_PROGRESS, Status.RETRYING})


# --- 1.1 cancellations -------------------------------------------------------------------
# `cancelled` is final: a booking voided by a cancel, or a cancel that was carried out.
FINAL_STATUSES = FINAL_STATUSES | {Status.CANCELLED}
OPERATIONS: tuple[str, ...] = ("issue", "cancel")
