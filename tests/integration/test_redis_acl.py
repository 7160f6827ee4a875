"""deploy/redis/users.acl against a real redis-server started with `--aclfile`: each role can do
what ticketrelay needs of it and nothing that would let it read or forge another's data.

The end-to-end proof that intake and the worker run a booking with their users, and that no
command of theirs is refused, is tests/e2e/test_acl_e2e.py."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from worker.ops.metrics.collector import TicketrelayCollector
from worker.queues import read_depths
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "redis" / "users.acl"
RENDER = ROOT / "deploy" / "redis" / "render-acl"
ROLES = ("producer-example", "intake", "worker", "flower", "exporter", "ops")
# The producer of the shipped example: its results stream is ticketrelay:results:example.
PRODUCER = "producer-example"
PRODUCER_RESULTS = "ticketrelay:results:example"

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def password_variable(user: str) -> str:
    return "REDIS_PASSWORD_" + user.upper().replace("-", "_")


def render(out: Path, passwords: dict[str, str], rules: Path = RULES) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_PASSWORD_")}
    env.update({password_variable(user): pw for user, pw in passwords.items()})
    return subprocess.run(
        ["sh", str(RENDER), str(rules), str(out)], env=env, capture_output=True, text=True, check=False
    )


@dataclass
class AclRedis:
    """A redis-server of its own on a free port, with the rendered ACL file plus an `admin`
    user that only the test uses (to look at ACL LOG and at what the roles wrote)."""

    port: int
    passwords: dict[str, str]
    proc: subprocess.Popen[bytes]
    extra_args: list[str] = field(default_factory=list)

    def url(self, user: str, db: int = 0) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/{db}"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), socket_timeout=10)

    def denied(self) -> list[dict[str, object]]:
        """ACL LOG: every command, key or channel Redis refused to a user, newest first."""
        log: list[dict[str, object]] = self.client("admin").acl_log()
        return log

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_acl_redis(tmp: Path, extra_args: list[str] | None = None) -> AclRedis:
    passwords = {user: f"{user}-{secrets.token_urlsafe(16)}" for user in ROLES}
    acl = tmp / "users.acl"
    done = render(acl, passwords)
    assert done.returncode == 0, done.stderr
    passwords["admin"] = secrets.token_urlsafe(24)
    admin_hash = hashlib.sha256(passwords["admin"].encode()).hexdigest()
    with acl.open("a") as fh:
        fh.write(f"user admin on #{admin_hash} ~* &* +@all\n")
    port = free_port()
    args = extra_args or []
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--aclfile",
            str(acl),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "noeviction",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    server = AclRedis(port, passwords, proc, args)
    deadline = time.monotonic() + 10
    while True:
        try:
            if server.client("admin").ping():
                return server
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    server = start_acl_redis(tmp_path_factory.mktemp("acl-redis"))
    yield server
    server.stop()


@pytest.fixture
def admin(acl_redis: AclRedis) -> Iterator[redis.Redis]:
    client = acl_redis.client("admin")
    client.flushdb()
    client.acl_log_reset()
    yield client
    client.close()


def refused(call: object) -> bool:
    """Whether calling `call` is refused by the ACL (NOPERM), as opposed to failing otherwise."""
    assert callable(call)
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


# ------------------------------------------------------------------------------ the file


def test_every_role_of_the_file_has_a_user_and_nobody_else_gets_in(acl_redis: AclRedis) -> None:
    names = {line.split()[1] for line in RULES.read_text().splitlines() if line.startswith("user ")}
    assert names == {"default", *ROLES}
    # Unauthenticated connections (health checks) may PING and nothing else.
    anonymous = redis.Redis(port=acl_redis.port)
    assert anonymous.ping()
    assert refused(lambda: anonymous.xrange("ticketrelay:dead"))
    assert refused(lambda: anonymous.xadd("ticketrelay:bookings", {"message": "{}"}))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"redis://worker:wrong-password-0123456@127.0.0.1:{acl_redis.port}/0").ping()


def test_the_file_covers_the_default_key_names() -> None:
    """The patterns are written for the default stream, queue and key names: a change of
    those settings needs the ACL file changed too."""
    s = Settings()
    text = RULES.read_text()
    for name in (s.intake_stream, s.dead_stream, s.results_stream, s.reply_to_prefix, s.metrics_key, s.queue):
        assert f"~{name}" in text, name
    assert s.bulk_queue.startswith(s.queue) and s.bulk_queue[len(s.queue)] != ":"  # ~ticketrelay[^:]*


def test_render_writes_hashes_only_and_refuses_weak_passwords(tmp_path: Path) -> None:
    out = tmp_path / "users.acl"
    good = {user: f"{user}-Aa0123456789abcdef" for user in ROLES}
    done = render(out, good)
    assert done.returncode == 0, done.stderr
    rendered = out.read_text()
    for pw in good.values():
        assert pw not in rendered
        assert f"#{hashlib.sha256(pw.encode()).hexdigest()}" in rendered
    assert out.stat().st_mode & 0o077 == 0, "the rendered file is readable by its owner only"

    missing = dict(good)
    del missing["ops"]
    done = render(out, missing)
    assert done.returncode == 0 and "REDIS_PASSWORD_OPS is not set" in done.stderr
    (ops_line,) = [line for line in out.read_text().splitlines() if line.startswith("user ops ")]
    assert "#" not in ops_line and "nopass" not in ops_line  # no password: nobody logs in as ops

    for bad in ("short-pw-123", "has space in it 0123456789", "x" * 15):
        before = out.read_text()
        done = render(out, {**good, "worker": bad})
        assert done.returncode != 0 and "REDIS_PASSWORD_WORKER" in done.stderr, bad
        assert bad not in done.stderr, "the refusal does not print the password"
        assert out.read_text() == before, "a refused render leaves the old file"


@needs_redis_server
def test_a_user_without_a_password_cannot_log_in(tmp_path: Path) -> None:
    out = tmp_path / "users.acl"
    done = render(out, {"worker": "worker-Aa0123456789abcdef"})
    assert done.returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--aclfile", str(out), "--save", ""],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        for user, pw in (("ops", ""), ("ops", "anything-at-all-1234"), ("intake", "intake")):
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, username=user, password=pw).ping()
        assert redis.Redis(port=port, username="worker", password="worker-Aa0123456789abcdef").ping()
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


# ------------------------------------------------------------------------------ producer


def test_producer_publishes_and_reads_its_own_results_only(acl_redis: AclRedis, admin: redis.Redis) -> None:
    admin.xadd(PRODUCER_RESULTS, {"result": "{}"})
    admin.xadd(f"{PRODUCER_RESULTS}:eu", {"result": "{}"})
    for other in ("ticketrelay:results", "ticketrelay:results:other", "ticketrelay:results:examplex"):
        admin.xadd(other, {"result": "{}"})
    admin.xadd("ticketrelay:dead", {"message": "personal data", "dead_reason": "invalid"})
    producer = acl_redis.client(PRODUCER)

    assert producer.xadd("ticketrelay:bookings", {"message": '{"message_id": "m-1"}'})
    assert admin.xlen("ticketrelay:bookings") == 1
    assert len(producer.xrange(PRODUCER_RESULTS)) == 1
    assert len(producer.xrevrange(f"{PRODUCER_RESULTS}:eu")) == 1
    assert producer.xread({PRODUCER_RESULTS: "0"}, count=10)

    # Other producers' results, the default results stream, the dead letters, the bookings.
    for other in ("ticketrelay:results", "ticketrelay:results:other", "ticketrelay:results:examplex"):
        assert refused(lambda o=other: producer.xrange(o)), other  # type: ignore[misc]
        assert refused(lambda o=other: producer.xread({o: "0"})), other  # type: ignore[misc]
    assert refused(lambda: producer.xrange("ticketrelay:dead"))
    assert refused(lambda: producer.xread({"ticketrelay:dead": "0"}))
    assert refused(lambda: producer.xrange("ticketrelay:bookings"))
    # Forging results, its own stream included: only ticketrelay writes results.
    for stream in (PRODUCER_RESULTS, "ticketrelay:results", "ticketrelay:results:other"):
        assert refused(lambda s=stream: producer.xadd(s, {"result": "{}"})), stream  # type: ignore[misc]
    assert refused(lambda: producer.xadd("ticketrelay:dead", {"message": "x"}))
    # Celery's keys: no forged tasks, no peeking at the unacked messages, no bindings.
    assert refused(lambda: producer.lpush("ticketrelay", "{}"))
    assert refused(lambda: producer.llen("ticketrelay"))
    assert refused(lambda: producer.hgetall("unacked"))
    assert refused(lambda: producer.smembers("_kombu.binding.ticketrelay"))
    assert refused(lambda: producer.publish("/0.celery.pidbox", "{}"))
    # Nor the rate-limit, breaker and metrics keys, nor deleting anything.
    assert refused(lambda: producer.hincrby("ticketrelay:metrics", "x", 1))
    assert refused(lambda: producer.delete("ticketrelay:bookings"))
    assert refused(lambda: producer.keys("*"))
    assert refused(lambda: producer.execute_command("FLUSHDB"))
    assert admin.xlen("ticketrelay:bookings") == 1 and admin.llen("ticketrelay") == 0


# ------------------------------------------------------------------------------ exporter


def test_exporter_reads_what_the_metrics_need_and_writes_nothing(
    acl_redis: AclRedis, admin: redis.Redis, sqlite_url: str
) -> None:
    from worker.db import make_engine
    from worker.ops.migrate import upgrade

    s = Settings(redis_url=acl_redis.url("exporter"), database_url=sqlite_url)
    admin.xadd(s.intake_stream, {"message": "{}"})
    admin.xgroup_create(s.intake_stream, s.intake_group, id="0")
    admin.lpush(s.queue, "task")
    admin.hset(s.metrics_key, '["calls", "eguma", "default", "issued"]', 3)
    exporter = acl_redis.client("exporter")

    depths = read_depths(exporter, s)
    assert depths.intake_length == 1 and depths.queues[s.queue] == 1
    assert int(exporter.info("memory")["maxmemory"]) == 64 * 1024 * 1024

    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        collector = TicketrelayCollector(s, engine, exporter, accounts=[("eguma", "default")], cache_s=0)
        metrics = {m.name: m for m in collector.collect()}
    finally:
        engine.dispose()
    up = {x.labels["source"]: x.value for x in metrics["ticketrelay_exporter_source_up"].samples}
    assert up == {"database": 1, "redis": 1}
    assert metrics["ticketrelay_celery_queue_length"].samples[0].value == 1
    # INFO memory, for the alert on Redis's memory limit (maxmemory, noeviction).
    assert metrics["ticketrelay_redis_memory_max_bytes"].samples[0].value == 64 * 1024 * 1024
    assert 0 < metrics["ticketrelay_redis_memory_used_bytes"].samples[0].value < 64 * 1024 * 1024
    assert acl_redis.denied() == [], "the exporter was refused something it reads"

    for write in (
        lambda: exporter.xadd(s.intake_stream, {"message": "{}"}),
        lambda: exporter.xadd(s.results_stream, {"result": "{}"}),
        lambda: exporter.hset(s.metrics_key, "x", 1),
        lambda: exporter.lpush(s.queue, "x"),
        lambda: exporter.delete(s.dead_stream),
        lambda: exporter.xtrim(s.intake_stream, maxlen=0),
        lambda: exporter.xrange(s.dead_stream),  # counts only: no dead letters' contents
        lambda: exporter.xrange(s.intake_stream),
        lambda: exporter.publish("/0.celery.pidbox", "{}"),
        lambda: exporter.config_get("*"),
    ):
        assert refused(write)
    assert admin.xlen(s.intake_stream) == 1 and admin.llen(s.queue) == 1


def test_a_redis_that_refuses_info_still_gives_the_queue_metrics(
    acl_redis: AclRedis, admin: redis.Redis, sqlite_url: str
) -> None:
    """A managed Redis may refuse INFO: the memory gauges are left out, nothing else."""
    from worker.db import make_engine
    from worker.ops.migrate import upgrade

    password = secrets.token_urlsafe(18)
    admin.acl_setuser(
        "noinfo", enabled=True, passwords=[f"+{password}"], keys=["ticketrelay*", "unacked"],
        commands=["-@all", "+llen", "+hlen", "+xlen", "+xinfo|groups", "+hgetall", "+get"],
    )  # fmt: skip
    client = redis.Redis(port=acl_redis.port, username="noinfo", password=password)
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        s = Settings(database_url=sqlite_url)
        metrics = {m.name: m for m in TicketrelayCollector(s, engine, client, [], cache_s=0).collect()}
    finally:
        engine.dispose()
        admin.acl_deluser("noinfo")
    up = {x.labels["source"]: x.value for x in metrics["ticketrelay_exporter_source_up"].samples}
    assert up["redis"] == 1 and "ticketrelay_celery_queue_length" in metrics
    assert "ticketrelay_redis_memory_used_bytes" not in metrics


# ------------------------------------------------------------------------------ operators


def test_operators_run_their_commands_but_nothing_dangerous(
    acl_redis: AclRedis, admin: redis.Redis, sqlite_url: str, tmp_path: Path
) -> None:
    from worker.ops.migrate import upgrade

    upgrade(sqlite_url)
    admin.xadd("ticketrelay:dead", {"message": '{"message_id": "d-1"}', "dead_reason": "invalid_json"})
    env = {
        **os.environ,
        "TICKETRELAY_REDIS_URL": acl_redis.url("ops"),
        "TICKETRELAY_DATABASE_URL": sqlite_url,
        "TICKETRELAY_STATE_DIR": str(tmp_path),
    }
    env.pop("TICKETRELAY_ACCOUNTS_FILE", None)
    for argv in (["status"], ["dead", "list"]):
        done = subprocess.run(
            [str(ROOT / "ticketrelay"), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stderr)
    assert acl_redis.denied() == []
    ops = acl_redis.client("ops")
    assert "used_memory" in ops.info("memory")
    assert refused(ops.flushall)
    assert refused(lambda: ops.config_get("*"))
    assert refused(lambda: ops.keys("*"))
    assert refused(lambda: ops.execute_command("ACL", "LIST"))  # nor the other users
