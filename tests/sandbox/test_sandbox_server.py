"""The same sandbox over real HTTP: one call per provider, control endpoints, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from worker.devtools.sandbox import SandboxHTTPServer, start_in_thread
from worker.devtools.sandbox.samples import sample_payload
from worker.providers import get_provider
from worker.providers.base import Attempt, OutcomeKind
from worker.settings import sandbox_accounts


@pytest.fixture
def server() -> Iterator[SandboxHTTPServer]:
    srv = start_in_thread(port=0)
    yield srv
    srv.stop()


def _attempt(
    server: SandboxHTTPServer,
    provider: str,
    name: str = "default",
    key: str = "key-1",
    in_doubt: bool = False,
) -> Attempt:
    acct = sandbox_accounts(server.url)[(provider, name)].model_copy(update={"timeout_s": 0.5})
    return Attempt(
        idempotency_key=key,
        payload=sample_payload(provider),
        account=acct,
        number=2 if in_doubt else 1,
        in_doubt=in_doubt,
    )


def test_one_call_per_provider_and_ground_truth(server: SandboxHTTPServer) -> None:
    with httpx.Client(timeout=2) as client:
        for provider, name in [
            ("remypass", "default"),
            ("fourvenues", "default"),
            ("fourvenues", "v1"),
            ("fourvenues_channels", "default"),
            ("eguma", "default"),
        ]:
            outcome = get_provider(provider).issue(
                client, _attempt(server, provider, name, key=f"key-{name}")
            )
            assert outcome.kind is OutcomeKind.ISSUED, (provider, name, outcome.error)
            assert outcome.tickets and outcome.tickets[0].code
        truth = client.get(f"{server.url}/_sandbox/ground-truth").json()
    assert truth["remypass"]["creations"] == {"BOOKING-1": 1}
    assert truth["fourvenues"]["tickets"] == 2
    assert truth["fourvenues_channels"]["tickets"] == 1
    assert truth["eguma"]["creations"] == {"key-default": 1}


def test_faults_over_http_take_effect(server: SandboxHTTPServer) -> None:
    with httpx.Client(timeout=2) as client:
        set_ = client.post(
            f"{server.url}/_sandbox/faults",
            json={
                "provider": "eguma",
                "fail_next": [{"kind": "drop_after_create"}, {"status": 429, "retry_after": 4}],
            },
        )
        assert set_.status_code == 200
        attempt = _attempt(server, "eguma")
        dropped = get_provider("eguma").issue(client, attempt)
        assert dropped.kind is OutcomeKind.RETRY and dropped.may_have_created
        assert dropped.error is not None and dropped.error.type == "network_error"
        limited = get_provider("eguma").issue(client, attempt)
        assert limited.kind is OutcomeKind.RETRY and limited.retry_after_s == 4
        replayed = get_provider("eguma").issue(client, attempt)
        assert replayed.kind is OutcomeKind.ISSUED and replayed.reconciled
        truth = client.get(f"{server.url}/_sandbox/ground-truth").json()["eguma"]
        assert truth["creations"] == {"key-1": 1}
        assert truth["faults"] == {"drop_after_create": 1, "status_429": 1}
        assert (
            client.post(f"{server.url}/_sandbox/faults", json={"provider": "eguma", "bogus": 1}).status_code
            == 400
        )
        assert client.post(f"{server.url}/_sandbox/reset").status_code == 200
        assert client.get(f"{server.url}/_sandbox/ground-truth").json()["eguma"]["requests"] == 0


def test_real_timeout_over_http(server: SandboxHTTPServer) -> None:
    with httpx.Client(timeout=2) as control:
        control.post(
            f"{server.url}/_sandbox/faults",
            json={"provider": "remypass", "fail_next": [{"kind": "timeout"}], "timeout_sleep_s": 1.0},
        )
    attempt = _attempt(server, "remypass")
    with httpx.Client(timeout=0.3) as client:
        outcome = get_provider("remypass").issue(client, attempt)
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert outcome.error is not None and outcome.error.type == "timeout"
