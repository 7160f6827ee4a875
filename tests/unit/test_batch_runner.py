"""worker.runtime.batch_runner: a batch's keys run concurrently, live and bulk on separate
thread pools (a live key never queues behind bulk keys)."""

from __future__ import annotations

import threading
import time
from typing import Any

from worker.runtime import batch_runner


def _names(bulk: bool, n: int) -> tuple[list[str], float]:
    def fn(row: Any) -> Any:
        time.sleep(0.2)
        return (threading.current_thread().name, row)

    started = time.monotonic()
    out = batch_runner(bulk)(fn, list(range(n)))  # type: ignore[arg-type]
    assert [row for _name, row in out] == list(range(n))  # results in the order of the keys
    return [name for name, _row in out], time.monotonic() - started


def test_live_and_bulk_keys_run_concurrently_on_their_own_pools() -> None:
    live, live_s = _names(False, 8)
    bulk, bulk_s = _names(True, 8)
    assert all(n.startswith("issue") for n in live) and len(set(live)) == 8
    assert all(n.startswith("bulk") for n in bulk) and len(set(bulk)) == 8
    assert live_s < 1.0 and bulk_s < 1.0  # 8 x 0.2 s one after another would take 1.6 s


def test_a_single_key_runs_in_the_calling_thread() -> None:
    names, _s = _names(False, 1)
    assert names == [threading.current_thread().name]


def test_each_thread_gets_its_own_client_per_account() -> None:
    from worker.issuing import ClientCache
    from worker.settings import sandbox_accounts

    made: list[object] = []

    def factory(_account: object) -> object:
        made.append(object())
        return made[-1]

    cache = ClientCache(factory)  # type: ignore[arg-type]
    account = sandbox_accounts("http://sandbox")[("eguma", "default")]
    assert cache.get(account) is cache.get(account)  # reused within a thread
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(cache.get(account)))
    t.start()
    t.join()
    assert seen[0] is not made[0] and len(made) == 2  # another thread: its own client
