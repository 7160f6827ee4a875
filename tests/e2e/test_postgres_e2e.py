"""The same pipeline on PostgreSQL: real intake and worker processes, one booking per provider."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.conftest import _drop_postgres, _fresh_postgres
from tests.e2e.harness import System
from tests.helpers import envelope

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_every_provider_issues_on_postgresql(
    tmp_path: Path, redis_server_url: str, postgres_admin_url: str
) -> None:
    redis.Redis.from_url(redis_server_url).flushdb()
    url, name = _fresh_postgres(postgres_admin_url)
    system = System(tmp_path, redis_server_url, database_url=url)
    try:
        system.start()
        envs = [envelope(p, f"pg-{p}") for p in ("remypass", "fourvenues", "fourvenues_channels", "eguma")]
        for env in envs:
            system.publish(env)
            system.publish(env)  # and a duplicate
        for env in envs:
            assert system.wait_result(env["message_id"])["status"] == "issued"
            rows = system.rows_for(env["message_id"])
            assert len(rows) == 1 and rows[0].status == "issued" and rows[0].attempts == 1
    finally:
        system.stop()
        _drop_postgres(postgres_admin_url, name)
