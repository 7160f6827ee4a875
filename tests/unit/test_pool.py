"""The bounded-shutdown thread pool: it refuses a Celery it was not written for, at start-up."""

from __future__ import annotations

import celery
import pytest

from worker import pool


def test_a_celery_version_the_pool_was_not_written_for_is_refused_when_the_pool_is_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(celery, "__version__", "5.8.0")
    with pytest.raises(pool.UnsupportedVersion) as err:
        pool.ThreadTaskPool(limit=2)
    message = str(err.value)
    assert "celery 5.8.0" in message and "worker/pool.py" in message and "5.7.0" in message


def test_the_installed_celery_gets_the_bounded_pool() -> None:
    assert celery.__version__ in pool.WRITTEN_FOR
    p = pool.ThreadTaskPool(limit=2)
    p.start()
    try:
        # Celery's soft shutdown calls this for every running request; the stock pool raises.
        assert p.terminate_job(123) is None
    finally:
        p.on_stop()
