"""A rate limit that two worker processes share, with real processes and the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import System, wait_for
from tests.helpers import envelope

pytestmark = pytest.mark.slow


def test_rate_limit_is_shared_by_two_worker_processes(tmp_path: Path, redis_server_url: str) -> None:
    import redis as redis_lib

    redis_lib.Redis.from_url(redis_server_url).flushdb()
    # One key per task: intake would otherwise send the 40 keys in a few batch tasks, and
    # one worker could take them all; this test is about two processes sharing the limit.
    limited = System(
        tmp_path,
        redis_server_url,
        {"TICKETRELAY_DEFAULT_RATE_LIMIT_PER_S": "10", "TICKETRELAY_TASK_BATCH": "1"},
    )
    try:
        limited.start("intake", "worker")
        limited.sup.start("worker2", ["worker", "-n", "second@%h"], limited.env)
        # Publish only once the second worker consumes: otherwise the first may take every task.
        log2 = tmp_path / "logs" / "worker2.log"
        wait_for(
            lambda: log2.exists() and "second@" in log2.read_text() and " ready." in log2.read_text(),
            60,
            "the second worker",
        )
        mids = [f"rl-{i}" for i in range(40)]
        for mid in mids:
            limited.publish(envelope("eguma", mid))
        for mid in mids:
            assert limited.wait_result(mid, timeout=90)["status"] == "issued"
        # Measured where it matters: when the requests reached the provider.
        stamps = sorted(limited.sandbox.ground_truth()["eguma"]["recent_arrivals"])
        assert len(stamps) == 40
        worst = max(sum(1 for u in stamps if t <= u < t + 1.0) for t in stamps)
        span = stamps[-1] - stamps[0]
        # Across both processes: over the run, the rate is the limit; in any one second, at most
        # the limit plus GCRA's burst (1 + 0.2 s of tolerance x 10/s = 3) plus the jitter
        # between a grant and the request's arrival (up to 3 on a loaded 2-core machine).
        steady = stamps[3:]  # after the initial burst of 3 (whose first calls also open connections)
        assert (len(steady) - 1) / (steady[-1] - steady[0]) <= 10 * 1.05, span
        assert worst <= 10 + 3 + 3, worst
        logs = (tmp_path / "logs" / "worker.log").read_text() + (
            tmp_path / "logs" / "worker2.log"
        ).read_text()
        assert logs.count('"provider": "eguma"') > 0
        both = [
            name
            for name in ("worker", "worker2")
            if "provider_call" in (tmp_path / "logs" / f"{name}.log").read_text()
        ]
        assert both == ["worker", "worker2"]  # both processes really did calls
    finally:
        limited.stop()
