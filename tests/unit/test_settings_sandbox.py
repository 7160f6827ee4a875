"""The sandbox only by explicit choice, results that say they came from it, and connection URLs
whose password no repr or print shows."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.table import TicketIssuance
from worker import settings as settings_module
from worker.devtools.dev import DEV_CONSUMER_PREFIX, foreign_consumers, run_dev
from worker.ledger import utcnow
from worker.ops import cli
from worker.results import encode_result, result_from_row
from worker.settings import (
    NO_ACCOUNTS_MESSAGE,
    NoAccountsConfigured,
    Settings,
    get_accounts,
    mask_url,
    require_accounts_or_sandbox,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-Pa55"


def _clear_caches() -> None:
    settings_module.get_settings.cache_clear()
    settings_module._process_accounts.cache_clear()


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Neither an accounts file nor TICKETRELAY_SANDBOX: what a forgotten setting looks like."""
    # The commands set up process-wide logging; in a test process that would outlive the test.
    monkeypatch.setattr(cli, "setup_logging", lambda *_a, **_k: None)
    monkeypatch.delenv("TICKETRELAY_SANDBOX", raising=False)
    monkeypatch.delenv("TICKETRELAY_ACCOUNTS_FILE", raising=False)
    _clear_caches()
    yield
    _clear_caches()


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    _clear_caches()
    yield
    _clear_caches()


# --- the choice ----------------------------------------------------------------------------------


def test_without_accounts_file_or_sandbox_the_check_refuses(no_sandbox: None) -> None:
    with pytest.raises(NoAccountsConfigured) as info:
        require_accounts_or_sandbox(Settings())
    assert "TICKETRELAY_ACCOUNTS_FILE" in str(info.value) and "TICKETRELAY_SANDBOX=1" in str(info.value)
    with pytest.raises(NoAccountsConfigured):
        get_accounts(Settings())  # no quiet fallback to the simulators either


def test_sandbox_chosen_or_accounts_file_set_passes(no_sandbox: None, tmp_path: Path) -> None:
    require_accounts_or_sandbox(Settings(sandbox=True))
    assert get_accounts(Settings(sandbox=True))[("eguma", "default")].sandbox
    require_accounts_or_sandbox(Settings(accounts_file=tmp_path / "accounts.toml"))


@pytest.mark.parametrize("command", ["intake", "worker", "beat"])
def test_intake_worker_and_beat_refuse_to_start_with_one_line(
    no_sandbox: None, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(cli, "_celery", lambda argv, extra_env=None: started.append(argv) or 0)
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert err == f"ticketrelay {command}: {NO_ACCOUNTS_MESSAGE}\n"
    assert started == []  # celery was never started


def test_a_reissue_refuses_too_instead_of_re_driving_against_the_simulators(
    no_sandbox: None,
    sqlite_url: str,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TICKETRELAY_REDIS_URL", redis_url)
    _clear_caches()
    assert cli.main(["reissue", "--dry-run"]) == 2
    assert capsys.readouterr().err == f"ticketrelay reissue: {NO_ACCOUNTS_MESSAGE}\n"


def test_the_worker_starts_once_the_sandbox_is_chosen(
    no_sandbox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETRELAY_SANDBOX", "1")
    _clear_caches()
    started: list[list[str]] = []
    monkeypatch.setattr(cli, "_celery", lambda argv, extra_env=None: started.append(argv) or 0)
    assert cli.main(["worker"]) == 0 and started and started[0][0] == "worker"


@pytest.mark.slow
def test_the_intake_process_refuses_without_a_choice(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_") or k == "TICKETRELAY_VENV"}
    env["TICKETRELAY_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached
    proc = subprocess.run(
        [str(ROOT / "ticketrelay"), "intake"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"ticketrelay intake: {NO_ACCOUNTS_MESSAGE}"]


# --- results say when they come from the sandbox ----------------------------------------------------


def _row(provider: str = "eguma", account: str = "default") -> TicketIssuance:
    now = utcnow()
    return TicketIssuance(
        idempotency_key="k-1",
        message_id="m-1",
        provider=provider,
        account=account,
        status="issued",
        attempts=1,
        tickets=[{"ticket_id": None, "code": "4666825950402448933", "category": "c1", "seat": None}],
        created_at=now,
        updated_at=now,
        completed_at=now,
        payload_sha256="0" * 64,
        reply_to="ticketrelay:results",
    )


def test_a_result_from_the_sandbox_says_so(fresh_caches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETRELAY_SANDBOX", "1")
    monkeypatch.delenv("TICKETRELAY_ACCOUNTS_FILE", raising=False)
    assert '"sandbox":true' in encode_result(result_from_row(_row()))


def test_a_result_from_a_real_account_says_it_is_not_the_sandbox(
    fresh_caches: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[eguma.default]\nbase_url = "https://api.e-guma.ch/v1"\napi_key = "k"\n'
        '[eguma.local]\nbase_url = "http://127.0.0.1:8765/eguma/v1"\napi_key = "k"\nsandbox = true\n'
    )
    monkeypatch.setenv("TICKETRELAY_ACCOUNTS_FILE", str(accounts))
    assert result_from_row(_row()).sandbox is False
    assert result_from_row(_row(account="local")).sandbox is True
    assert result_from_row(_row(account="unknown")).sandbox is False
    assert result_from_row(_row(), sandbox=True).sandbox is True  # a caller that knows


# --- dev does not join someone else's Redis ------------------------------------------------------


def _group_with(client: redis.Redis, consumer: str, s: Settings) -> None:
    client.xgroup_create(s.intake_stream, s.intake_group, id="0", mkstream=True)
    client.xgroup_createconsumer(s.intake_stream, s.intake_group, consumer)


def test_dev_tells_its_own_consumers_from_others(redis_client: redis.Redis, settings: Settings) -> None:
    assert foreign_consumers(redis_client, settings) == []  # no stream, no group
    _group_with(redis_client, f"{DEV_CONSUMER_PREFIX}-4242", settings)
    assert foreign_consumers(redis_client, settings) == []
    redis_client.xgroup_createconsumer(settings.intake_stream, settings.intake_group, "web-1-17")
    assert foreign_consumers(redis_client, settings) == ["web-1-17"]


def test_dev_refuses_a_redis_whose_intake_group_others_consume(
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_caches: None,
) -> None:
    monkeypatch.setenv("TICKETRELAY_REDIS_URL", redis_url)
    _clear_caches()
    s = settings_module.get_settings()
    _group_with(redis_client, "prod-intake-1", s)
    assert run_dev(demo=False, exit_when_done=True) == 2
    out = capsys.readouterr()
    line = out.err.strip()
    assert len(line.splitlines()) == 1 and "--join" in line and "prod-intake-1" in line
    assert out.out == ""  # nothing was started
    consumers = redis_client.xinfo_consumers(s.intake_stream, s.intake_group)
    assert [c["name"] for c in consumers] == [b"prod-intake-1"]


# --- URLs with passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        (f"rediss://default:{PASSWORD}@cache:6380/2", "rediss://default:***@cache:6380/2"),
        (
            f"postgresql+psycopg://relay:{PASSWORD}@db:5432/ticketrelay?sslmode=require",
            "postgresql+psycopg://relay:***@db:5432/ticketrelay?sslmode=require",
        ),
        (
            f"postgresql+psycopg://relay@db/ticketrelay?password={PASSWORD}&sslmode=require",
            "postgresql+psycopg://relay@db/ticketrelay?password=***&sslmode=require",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///ticketrelay.db", "sqlite:///ticketrelay.db"),
    ],
)
def test_mask_url_hides_the_password_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_settings_never_show_the_url_passwords_but_connect_with_them(no_sandbox: None) -> None:
    s = Settings(
        redis_url=f"redis://:{PASSWORD}@redis.internal:6379/0",
        database_url=f"postgresql+psycopg://relay:{PASSWORD}@db/ticketrelay",
    )
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    assert PASSWORD not in repr(s.redis_url) and PASSWORD not in repr(s.model_dump())
    assert s.redis_url == f"redis://:{PASSWORD}@redis.internal:6379/0"  # what clients connect with
    pool = redis.Redis.from_url(s.redis_url).connection_pool
    assert pool.connection_kwargs["password"] == PASSWORD


def test_settings_from_the_environment_are_masked_too(
    no_sandbox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETRELAY_REDIS_URL", f"redis://:{PASSWORD}@redis.internal:6379/0")
    monkeypatch.setenv("TICKETRELAY_DATABASE_URL", f"postgresql+psycopg://relay:{PASSWORD}@db/ticketrelay")
    s = settings_module.get_settings()
    assert PASSWORD not in repr(s)
    assert s.database_url.endswith("@db/ticketrelay") and PASSWORD in s.database_url


def test_what_dev_prints_about_redis_hides_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh_caches: None
) -> None:
    from worker.devtools import dev

    monkeypatch.setenv("TICKETRELAY_REDIS_URL", f"redis://:{PASSWORD}@redis.internal:6379/0")
    _clear_caches()
    monkeypatch.setattr(dev, "redis_answers", lambda _url: True)
    monkeypatch.setattr(dev, "foreign_consumers", lambda _client, _s: ["web-1-17"])
    assert run_dev(demo=False, exit_when_done=True) == 2
    err = capsys.readouterr().err
    assert "redis://:***@redis.internal:6379/0" in err and PASSWORD not in err
