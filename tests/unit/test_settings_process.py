"""The process-level settings (logging, state dir, Flower port, metrics cache) are read through
worker.settings like every other TICKETRELAY_* variable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from worker.heartbeat import heartbeat_dir
from worker.logs import JsonFormatter, setup_logging
from worker.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def _keep_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logging_is_set_up_even_when_an_unrelated_setting_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    # Otherwise the process could not report that very error.
    monkeypatch.setenv("TICKETRELAY_LEASE_S", "not-a-number")
    monkeypatch.setenv("TICKETRELAY_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("TICKETRELAY_LOG_FORMAT", "text")
    setup_logging()
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert not isinstance(root.handlers[0].formatter, JsonFormatter)


def test_logs_are_json_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKETRELAY_LOG_FORMAT", raising=False)
    monkeypatch.delenv("TICKETRELAY_LOG_LEVEL", raising=False)
    setup_logging()
    root = logging.getLogger()
    assert root.level == logging.INFO and isinstance(root.handlers[0].formatter, JsonFormatter)


def test_state_dir_flower_port_and_metrics_cache_are_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TICKETRELAY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TICKETRELAY_FLOWER_PORT", "5600")
    monkeypatch.setenv("TICKETRELAY_METRICS_CACHE_S", "2.5")
    s = Settings()
    assert (s.state_dir, s.flower_port, s.metrics_cache_s) == (tmp_path, 5600, 2.5)
    get_settings.cache_clear()  # the process's settings are read once
    try:
        assert heartbeat_dir() == tmp_path / "heartbeat"
    finally:
        get_settings.cache_clear()
    for name in ("TICKETRELAY_STATE_DIR", "TICKETRELAY_FLOWER_PORT", "TICKETRELAY_METRICS_CACHE_S"):
        monkeypatch.delenv(name)
    s = Settings()
    assert (s.state_dir, s.flower_port, s.metrics_cache_s) == (Path(".ticketrelay"), 5555, 5.0)
    monkeypatch.setenv("TICKETRELAY_METRICS_CACHE_S", "301")
    with pytest.raises(ValueError):
        Settings()
