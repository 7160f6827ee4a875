"""A real booking through a Redis that enforces deploy/redis/users.acl: the producer publishes
and reads its results with its own user, intake runs as `intake`, the Celery worker and beat as
`worker`, the exporter as `exporter`, and Redis refuses none of their commands (ACL LOG)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import System, wait_for
from tests.helpers import CUSTOMER_EMAIL, envelope
from tests.integration.test_redis_acl import PRODUCER, PRODUCER_RESULTS, AclRedis, start_acl_redis
from worker.producer import publish
from worker.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def acl_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, AclRedis]]:
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    tmp: Path = tmp_path_factory.mktemp("acl-e2e")
    server = start_acl_redis(tmp)
    # The harness's own client (results, dead letters) is the test's admin; every process
    # gets the user of its role.
    system = System(tmp, server.url("admin"))
    system.sup.start("intake", ["intake"], {**system.env, "TICKETRELAY_REDIS_URL": server.url("intake")})
    for name in ("worker", "beat"):
        system.sup.start(name, [name], {**system.env, "TICKETRELAY_REDIS_URL": server.url("worker")})
    try:
        yield system, server
    finally:
        system.stop()
        server.stop()


def _results(server: AclRedis) -> list[dict[str, Any]]:
    producer = server.client(PRODUCER)
    return [json.loads(fields[b"result"]) for _id, fields in producer.xrange(PRODUCER_RESULTS)]


def test_a_booking_and_a_poison_message_run_with_the_role_users(acl_system: tuple[System, AclRedis]) -> None:
    system, server = acl_system
    producer = server.client(PRODUCER)
    publish(producer, envelope("eguma", "acl-1", reply_to=PRODUCER_RESULTS))
    publish(producer, envelope("remypass", "acl-2", reply_to=PRODUCER_RESULTS))
    # Invalid: intake writes the dead letter and a `rejected` result, as the intake user.
    bad = {"message_id": "acl-bad", "provider": "eguma", "reply_to": PRODUCER_RESULTS}
    publish(producer, json.dumps(bad))

    def by_id() -> dict[str, dict[str, Any]] | None:
        found = {r["message_id"]: r for r in _results(server)}
        return found if {"acl-1", "acl-2", "acl-bad"} <= set(found) else None

    results = wait_for(by_id, 90, "the three results on the producer's stream")
    assert results["acl-1"]["status"] == "issued" and results["acl-1"]["tickets"]
    assert results["acl-2"]["status"] == "issued"
    assert results["acl-bad"]["status"] == "rejected"
    dead = system.dead_letters()
    assert len(dead) == 1 and b"acl-bad" in dead[0][b"message"]
    assert system.sandbox.ground_truth()["eguma"]["creations"] == {
        system.rows_for("acl-1")[0].idempotency_key: 1
    }

    # Beat (worker user) sends a sweep every second and the worker takes them off the queue.
    wait_for(lambda: system.logs().count("Sending due task sweep") >= 3, 30, "beat's sweeps")
    wait_for(lambda: system.redis.llen(Settings().queue) == 0, 10, "the worker to take the sweeps")
    # Nothing any role did was refused: the ACL is complete for what the processes do.
    denied = server.denied()
    assert denied == [], [(d.get("username"), d.get("context"), d.get("object")) for d in denied]
    # The producer never sees another stream's data, and no personal data sits in Celery's keys.
    for key in system.redis.scan_iter():
        if system.redis.type(key) == b"list":
            assert all(CUSTOMER_EMAIL.encode() not in m for m in system.redis.lrange(key, 0, -1)), key


def test_the_exporter_serves_the_pipeline_metrics_with_its_read_only_user(
    acl_system: tuple[System, AclRedis],
) -> None:
    from worker.db import make_engine
    from worker.ops.metrics.collector import TicketrelayCollector

    system, server = acl_system
    s = Settings(redis_url=server.url("exporter"), database_url=system.database_url)
    engine = make_engine(system.database_url)
    try:
        collector = TicketrelayCollector(s, engine, server.client("exporter"), [("eguma", "default")], 0)
        metrics = {m.name: m for m in collector.collect()}
    finally:
        engine.dispose()
    up = {x.labels["source"]: x.value for x in metrics["ticketrelay_exporter_source_up"].samples}
    assert up == {"database": 1, "redis": 1}
    assert metrics["ticketrelay_intake_stream_length"].samples[0].value >= 0
    assert "ticketrelay_provider_calls" in metrics
    assert server.denied() == []


def test_flower_sees_the_tasks_and_workers_with_its_own_user(acl_system: tuple[System, AclRedis]) -> None:
    import httpx

    from tests.conftest import free_port

    system, server = acl_system
    port = free_port()
    auth = ("ops", "acl-flower-Vx9r2Lq7Tz0b")
    system.sup.start(
        "flower",
        ["flower", f"--port={port}", "--address=127.0.0.1"],
        {**system.env, "TICKETRELAY_REDIS_URL": server.url("flower"), "FLOWER_BASIC_AUTH": ":".join(auth)},
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, "flower")
    time.sleep(2)  # let Flower subscribe to the workers' events
    publish(server.client(PRODUCER), envelope("eguma", "acl-flower", reply_to=PRODUCER_RESULTS))
    wait_for(lambda: "acl-flower" in {r["message_id"] for r in _results(server)}, 60, "the booking")
    key = system.rows_for("acl-flower")[0].idempotency_key

    def seen() -> bool:
        tasks = httpx.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
        return any(key in str(t.get("args")) for t in tasks.values())

    try:
        wait_for(seen, 30, "Flower to list the task (events over the flower user)")
    except AssertionError:
        refusals = [(d.get("username"), d.get("context"), d.get("object")) for d in server.denied()]
        log = system.logs()[-3000:]
        raise AssertionError(f"Flower saw no task; refused: {refusals}; log: {log}") from None
    # Inspect goes over the pidbox broadcast and reply lists.
    workers = httpx.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth, timeout=20)
    assert workers.status_code == 200 and workers.json(), workers.text
    # Read-only by default, with no FLOWER_READ_ONLY given.
    assert httpx.post(f"{base}/api/worker/pool/restart/celery@x", auth=auth, timeout=10).status_code == 403
    denied = server.denied()
    assert denied == [], [(d.get("username"), d.get("context"), d.get("object")) for d in denied]
