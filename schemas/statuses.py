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


FINAL_STATUSES: frozenset[str] = frozenset(
    {Status.ISSUED, Status.FAILED, Status.REJECTED, Status.NEEDS_REVIEW}
)
ACTIVE_STATUSES: frozenset[str] = frozenset({Status.QUEUED, Status.IN_PROGRESS, Status.RETRYING})
