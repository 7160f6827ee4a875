"""The sandbox's own keys and the accounts they open.

Defined here, not imported from the product: the simulators must not share code with the
clients they test. tests/sandbox/test_accounts.py checks that the product's built-in sandbox
accounts (worker/settings.py) use these same values.
"""

from __future__ import annotations

# Keys the sandbox knows, mapped to the account (merchant, organisation, channel) they open.
SANDBOX_API_KEY = "sandbox-key"
SECOND_API_KEY = "sandbox-key-2"
# A second user of the "default" account: e-guma lets only the key that created a booking
# cancel it, "even of the same merchant".
COLLEAGUE_API_KEY = "sandbox-key-colleague"
DEFAULT_KEYS: dict[str, str] = {
    SANDBOX_API_KEY: "default",
    SECOND_API_KEY: "second",
    COLLEAGUE_API_KEY: "default",
}

# A known key without any permission: RemyPass (and Fourvenues Integrations) answer 403.
NO_PERMISSION_KEY = "sandbox-no-permission"

# Fourvenues Integrations auth v1: integration_id + secret, opening the "default" account.
FOURVENUES_INTEGRATION_ID = "sandbox-integration"
FOURVENUES_SECRET = "sandbox-secret"
FOURVENUES_V1 = (FOURVENUES_INTEGRATION_ID, FOURVENUES_SECRET)
