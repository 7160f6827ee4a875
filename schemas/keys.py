"""The idempotency key (CONTRACT.md section 1): pure, so producers can compute it too."""

import uuid

# Fixed forever: changing it would give every message a new key and risk second tickets.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d7c52-3b0e-5a86-9d64-2c1f0e8a4b17")


def idempotency_key(provider: str, account: str, message_id: str, generation: int = 0) -> str:
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{provider}/{account}/{message_id}/{generation}"))
