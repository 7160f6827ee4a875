"""End to end: real intake, worker and beat processes record events, the exporter (its own
process, `python -m worker.ops.metrics_server`) serves them, and what it says matches SQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from tests.conftest import free_port
from tests.e2e.harness import System, wait_for
from tests.helpers import envelope
from worker import ledger
from worker.devtools.supervisor import child_env

pytestmark = pytest.mark.slow
PROVIDERS = ["remypass", "fourvenues", "fourvenues_channels", "eguma"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def system(tmp_path: Path, redis_url: str) -> Iterator[System]:
    sys_ = System(tmp_path, redis_url)
    sys_.start()
    try:
        yield sys_
    finally:
        sys_.stop()


@pytest.fixture
def exporter(system: System) -> Iterator[str]:
    port = free_port()
    env = child_env({**system.env, "TICKETRELAY_METRICS_PORT": str(port)})
    log = (system.tmp / "logs" / "metrics.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.ops.metrics_server"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url) or proc.poll() is not None, 30, "the metrics exporter")
        assert proc.poll() is None, system.logs()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).text == "ok"
    except httpx.TransportError:
        return False


def scrape(url: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_scraped_metrics_match_the_ledger(system: System, exporter: str) -> None:
    # One 503 for e-guma: one RETRY outcome, then issued on the next attempt.
    system.sandbox.set_faults("eguma", fail_next=[{"status": 503}])
    for provider in PROVIDERS:
        system.publish(envelope(provider, f"m-{provider}"))
    bad = envelope("eguma", "m-bad")
    bad["payload"] = {"unexpected": True}
    system.publish(bad)
    for provider in PROVIDERS:
        assert system.wait_result(f"m-{provider}")["status"] == "issued"
    assert system.wait_result("m-bad")["status"] == "rejected"

    with system.engine.connect() as conn:
        attempts = int(conn.execute(select(func.sum(ledger.C.attempts))).scalar() or 0)
    truth = ledger.counts_by_status(system.engine)
    assert attempts == len(PROVIDERS) + 1  # one call each, plus e-guma's retry

    # The workers flush their events every second: wait until the histogram has every call.
    def settled() -> Samples | None:
        s = scrape(exporter)
        done = total(s, "ticketrelay_provider_call_duration_seconds_count") == attempts
        return s if done and total(s, "ticketrelay_celery_queue_length") == 0 else None

    samples: Samples = wait_for(settled, 20, "the exporter to show every provider call")

    for (provider, status), n in truth.items():
        assert total(samples, "ticketrelay_bookings", provider=provider, status=status) == n, (
            provider,
            status,
        )
    assert total(samples, "ticketrelay_bookings", status="issued") == len(PROVIDERS)
    assert total(samples, "ticketrelay_bookings", status="rejected") == 1
    hist = "ticketrelay_provider_call_duration_seconds"
    for provider in PROVIDERS:
        issued = {"provider": provider, "outcome": "issued"}
        assert total(samples, f"{hist}_count", **issued) == 1, provider
        assert total(samples, f"{hist}_bucket", le="+Inf", **issued) == 1
        assert 0 < total(samples, f"{hist}_sum", **issued) < 10
        calls = total(samples, "ticketrelay_provider_calls_total", provider=provider, account="default")
        assert calls == (2 if provider == "eguma" else 1)
    assert total(samples, f"{hist}_count", provider="eguma", outcome="retry") == 1
    retries = "ticketrelay_provider_retries_total"
    assert total(samples, retries, provider="eguma", error_type="provider_unavailable") == 1
    assert total(samples, retries) == 1
    assert total(samples, "ticketrelay_dead_letters_total", error_type="invalid_payload") == 1
    assert total(samples, "ticketrelay_dead_letter_stream_length") == 1
    # Intake may already have trimmed what it acknowledged, down to its last delivered entry.
    assert 1 <= total(samples, "ticketrelay_intake_stream_length") <= len(PROVIDERS) + 1
    assert total(samples, "ticketrelay_intake_pending_entries") == 0
    assert total(samples, "ticketrelay_results_stream_length") >= len(PROVIDERS) + 1
    assert total(samples, "ticketrelay_oldest_unfinished_booking_age_seconds") == 0
    assert total(samples, "ticketrelay_exporter_source_up") == 2
    _no_personal_data(samples)


def _no_personal_data(samples: Samples) -> None:
    from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME

    text: Any = repr(samples)
    assert CUSTOMER_EMAIL not in text and CUSTOMER_NAME not in text
