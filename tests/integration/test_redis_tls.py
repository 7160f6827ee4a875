"""rediss:// against a local TLS Redis (redis-server built with TLS, a CA and a server
certificate made here with openssl): every client verifies the server against
TICKETRELAY_REDIS_TLS_CA_FILE; `ticketrelay publish` and `ticketrelay intake` (with Celery's
broker over TLS) work through it, and a server the CA did not sign is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.helpers import envelope
from worker import redis_clients
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("openssl") is None,
    reason="needs redis-server and openssl",
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost it signed: (ca, cert, key)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
             "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}-ca.crt",
             "-CAkey", f"{name}-ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
             "-out", f"{name}-server.crt", cwd=d)  # fmt: skip
    return d / f"{name}-ca.crt", d / f"{name}-server.crt", d / f"{name}-server.key"


@dataclass
class TlsRedis:
    port: int
    ca: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    d = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca_and_server_cert(d, "test")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
        cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = TlsRedis(port, ca, proc)
    settings = Settings(redis_url=server.url, redis_tls_ca_file=ca)
    deadline = time.monotonic() + 10
    while not _answers(server.url, settings):
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            if "tls" in out.lower() and "not" in out.lower():
                pytest.skip(f"redis-server was built without TLS: {out[-200:]}")
            raise AssertionError(f"TLS redis-server did not start: {out[-500:]}")
        assert time.monotonic() < deadline, "TLS redis-server did not answer"
        time.sleep(0.1)
    yield server
    proc.terminate()
    proc.wait(10)


def _answers(url: str, settings: Settings) -> bool:
    client = redis_clients.for_url(url, "ops", settings)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_every_purpose_verifies_the_server_against_the_configured_ca(tls_redis: TlsRedis) -> None:
    s = Settings(redis_url=tls_redis.url, redis_tls_ca_file=tls_redis.ca)
    for purpose in redis_clients.PURPOSES:
        client = redis_clients.for_url(tls_redis.url, purpose, s)
        assert client.ping(), purpose
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls_redis.ca)
        client.close()
    # The host name is checked too: the certificate names 127.0.0.1 and localhost.
    assert redis_clients.for_url(f"rediss://localhost:{tls_redis.port}/0", "ops", s).ping()


def test_a_server_the_ca_did_not_sign_is_refused(tls_redis: TlsRedis, tmp_path: Path) -> None:
    other_ca, _cert, _key = make_ca_and_server_cert(tmp_path, "other")
    for ca in (other_ca, None):  # another private CA, and the system's CAs
        s = Settings(redis_url=tls_redis.url, redis_tls_ca_file=ca)
        client = redis_clients.for_url(tls_redis.url, "ops", s)
        with pytest.raises(redis.ConnectionError, match=r"(?i)certificate"):
            client.ping()
    # A plain redis:// client gets nothing from a TLS port.
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        redis.Redis(port=tls_redis.port, socket_timeout=2).ping()


def test_celery_gets_the_ca_for_a_tls_broker(tls_redis: TlsRedis) -> None:
    import ssl

    from worker.app import make_app

    s = Settings(redis_url=tls_redis.url, redis_tls_ca_file=tls_redis.ca)
    app = make_app(s)
    assert app.conf.broker_use_ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(tls_redis.ca),
    }
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.default_channel.client.ping()
    assert make_app(Settings(redis_url="redis://127.0.0.1:6379/0")).conf.broker_use_ssl is None


def test_publish_and_intake_run_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tls.db'}"
    env = {
        **os.environ,
        "TICKETRELAY_REDIS_URL": tls_redis.url,
        "TICKETRELAY_REDIS_TLS_CA_FILE": str(tls_redis.ca),
        "TICKETRELAY_DATABASE_URL": db,
        "TICKETRELAY_STATE_DIR": str(tmp_path / "state"),
        "TICKETRELAY_INTAKE_BLOCK_MS": "200",
    }
    env.pop("TICKETRELAY_ACCOUNTS_FILE", None)
    ticketrelay = str(ROOT / "ticketrelay")
    subprocess.run([ticketrelay, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    lines = tmp_path / "bookings.jsonl"
    lines.write_text(json.dumps(envelope("eguma", "tls-1")) + "\n" + '{"message_id": "tls-bad"}\n')
    published = subprocess.run(
        [ticketrelay, "publish", str(lines)], env=env, capture_output=True, text=True, timeout=120
    )
    assert published.returncode == 0, published.stderr
    assert "published 2" in published.stdout

    check = redis_clients.for_url(tls_redis.url, "ops", Settings(redis_tls_ca_file=tls_redis.ca))
    s = Settings()
    intake = subprocess.Popen(
        [ticketrelay, "intake"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        # The valid booking becomes a Celery task (sent over the TLS broker connection), the
        # invalid one a dead letter.
        while not (check.llen(s.queue) >= 1 and check.xlen(s.dead_stream) == 1):
            assert intake.poll() is None, intake.stderr.read().decode() if intake.stderr else ""
            assert time.monotonic() < deadline, "intake did not handle the entries over TLS"
            time.sleep(0.2)
    finally:
        intake.terminate()
        intake.wait(30)
    task = json.loads(check.lindex(s.queue, 0) or b"{}")
    assert task["headers"]["task"] in ("ticketrelay.issue", "ticketrelay.issue_batch")
