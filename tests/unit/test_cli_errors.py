"""The `ticketrelay` command end to end (a subprocess, as an operator runs it): a store down,
a database not migrated or a missing file give one line naming the problem, no password and
no traceback, and the exit code documented in `ticketrelay --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from worker.ops import errors
from worker.ops.migrate import upgrade
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-secret"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_")}
    clean.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "worker.ops.cli", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and PASSWORD not in stderr
    return lines[0]


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    return url


def closed_redis() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


def test_status_exits_3_when_redis_is_unreachable(migrated: str) -> None:
    proc = cli("status", TICKETRELAY_REDIS_URL=closed_redis(), TICKETRELAY_DATABASE_URL=migrated)
    assert proc.returncode == errors.UNREACHABLE
    line = one_line(proc.stderr)
    assert line.startswith("ticketrelay status: Redis unreachable at redis://:***@127.0.0.1:")
    assert "bookings by status" in proc.stdout  # what could be read is still shown


def test_status_exits_0_when_both_stores_answer(migrated: str, redis_url: str) -> None:
    proc = cli("status", "--json", TICKETRELAY_REDIS_URL=redis_url, TICKETRELAY_DATABASE_URL=migrated)
    assert proc.returncode == errors.OK, proc.stderr
    assert '"celery_queue": 0' in proc.stdout


def test_a_database_not_migrated_names_the_fix(tmp_path: Path, redis_url: str) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = cli("status", TICKETRELAY_REDIS_URL=redis_url, TICKETRELAY_DATABASE_URL=f"sqlite:///{empty}")
    assert proc.returncode == errors.USAGE
    line = one_line(proc.stderr)
    assert "is not migrated" in line and "ticketrelay migrate" in line


def test_an_unreachable_database_exits_3_without_its_password(redis_url: str) -> None:
    url = f"postgresql+psycopg://ops:{PASSWORD}@127.0.0.1:{free_port()}/ticketrelay"
    proc = cli("migrate", TICKETRELAY_REDIS_URL=redis_url, TICKETRELAY_DATABASE_URL=url)
    assert proc.returncode == errors.UNREACHABLE
    line = one_line(proc.stderr)
    assert line.startswith("ticketrelay migrate: database unreachable at postgresql+psycopg://ops:***@")


def test_publish_to_an_unreachable_redis_exits_3(tmp_path: Path) -> None:
    f = tmp_path / "bookings.jsonl"
    f.write_text('{"message_id": "x"}\n')
    proc = cli("publish", str(f), TICKETRELAY_REDIS_URL=closed_redis())
    assert proc.returncode == errors.UNREACHABLE
    assert "Redis unreachable" in one_line(proc.stderr)


def test_a_missing_file_exits_2(tmp_path: Path, migrated: str, redis_url: str) -> None:
    missing = tmp_path / "nope.jsonl"
    proc = cli("publish", str(missing), TICKETRELAY_REDIS_URL=redis_url)
    assert proc.returncode == errors.USAGE
    assert one_line(proc.stderr) == f"ticketrelay publish: cannot read {missing}: No such file or directory"
    proc = cli(
        "reissue", "--file", str(missing), TICKETRELAY_REDIS_URL=redis_url, TICKETRELAY_DATABASE_URL=migrated
    )
    assert proc.returncode == errors.USAGE
    assert str(missing) in one_line(proc.stderr)
    proc = cli("intake", TICKETRELAY_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"))
    assert proc.returncode == errors.USAGE
    assert "accounts.toml" in one_line(proc.stderr)


def test_invalid_settings_exit_2_in_one_line(migrated: str) -> None:
    proc = cli("status", TICKETRELAY_DATABASE_URL=migrated, TICKETRELAY_METRICS_PORT="not-a-port")
    assert proc.returncode == errors.USAGE
    assert "invalid configuration: metrics_port" in one_line(proc.stderr)


def test_provider_is_one_of_the_known_providers() -> None:
    proc = cli("reissue", "--provider", "ticketmaster", "--dry-run")
    assert proc.returncode == errors.USAGE
    assert "invalid choice: 'ticketmaster'" in proc.stderr and "eguma" in proc.stderr


def test_help_documents_the_exit_codes() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for code in ("0  ok", "1  the command ran and failed", "2  usage or configuration", "3  a store is"):
        assert code in proc.stdout
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in (errors.OK, errors.FAILED, errors.USAGE, errors.UNREACHABLE, errors.STOPPED):
        assert f"| {code} |" in doc


def test_passwords_are_hidden_in_every_message() -> None:
    s = Settings(
        redis_url=f"redis://user:{PASSWORD}@cache:6380/1",
        database_url=f"postgresql+psycopg://ops:{PASSWORD}@db/ticketrelay",
    )
    import redis

    problem = errors.describe(redis.ConnectionError(f"auth failed for {PASSWORD}"), s)
    assert problem is not None and problem.code == errors.UNREACHABLE
    assert PASSWORD not in problem.message and "redis://user:***@cache:6380/1" in problem.message
    assert errors.redis_url_for_humans("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    refused = errors.describe(redis.ResponseError("unknown command 'FROB'"), s)
    assert refused == errors.Problem(errors.FAILED, "Redis refused the command: unknown command 'FROB'")
    assert errors.describe(RuntimeError("a bug"), s) is None  # a bug keeps its traceback
