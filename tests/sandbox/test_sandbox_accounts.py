"""The product's built-in sandbox accounts (worker/settings.py) and the sandbox's own keys
(worker/devtools/sandbox/accounts.py) are defined apart on purpose; they must agree."""

from __future__ import annotations

from worker import settings
from worker.devtools.sandbox import accounts


def test_the_product_uses_the_sandbox_keys() -> None:
    assert settings.SANDBOX_API_KEY == accounts.SANDBOX_API_KEY
    assert accounts.DEFAULT_KEYS[accounts.SANDBOX_API_KEY] == "default"
    assert settings.SANDBOX_FOURVENUES_INTEGRATION_ID == accounts.FOURVENUES_INTEGRATION_ID
    assert settings.SANDBOX_FOURVENUES_SECRET == accounts.FOURVENUES_SECRET


def test_the_product_accounts_point_at_the_sandbox_prefixes() -> None:
    built_in = settings.sandbox_accounts("http://sb:1")
    assert built_in[("remypass", "default")].base_url == "http://sb:1/remypass/api/v1/public"
    assert built_in[("fourvenues", "default")].base_url == "http://sb:1/fourvenues"
    assert built_in[("fourvenues", "v1")].base_url == "http://sb:1/fourvenues"
    assert built_in[("fourvenues_channels", "default")].base_url == "http://sb:1/fourvenues-channels"
    assert built_in[("eguma", "default")].base_url == "http://sb:1/eguma/v1"
    for account in built_in.values():
        if account.api_key is not None:
            assert account.api_key.get_secret_value() in accounts.DEFAULT_KEYS
    v1 = built_in[("fourvenues", "v1")]
    assert v1.integration_id is not None and v1.secret is not None
    assert (v1.integration_id.get_secret_value(), v1.secret.get_secret_value()) == accounts.FOURVENUES_V1
