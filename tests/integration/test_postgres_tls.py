"""`sslmode=verify-full` against a PostgreSQL of this test's own (initdb in a temporary
directory, a CA and a server certificate made with openssl, only TLS connections accepted).
The machine's shared PostgreSQL runs without TLS and is not reconfigured."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import free_port
from tests.integration.test_redis_tls import make_ca_and_server_cert
from worker.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _has_postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


def _as_postgres() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        PG_BIN is None
        or shutil.which("openssl") is None
        or (os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_postgres_user())),
        reason="needs PostgreSQL's server binaries, openssl, and runuser when run as root",
    ),
]


@dataclass
class TlsPostgres:
    port: int
    ca: Path

    def url(self, sslmode: str, ca: Path | None = None, host: str = "127.0.0.1") -> str:
        root = f"&sslrootcert={ca or self.ca}" if sslmode.startswith("verify") else ""
        return f"postgresql+psycopg://postgres@{host}:{self.port}/postgres?sslmode={sslmode}{root}"


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    assert PG_BIN is not None
    # Not under pytest's temporary directory: that one is private to root, and the server runs
    # as the postgres user.
    d = Path(tempfile.mkdtemp(prefix="ticketrelay-pgtls-"))
    ca, cert, key = make_ca_and_server_cert(d, "pg")
    data = d / "data"
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    subprocess.run(
        [*_as_postgres(), str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.copy(cert, data / "server.crt")
    shutil.copy(key, data / "server.key")
    (data / "server.key").chmod(0o600)
    # TLS only: a connection without it is refused by the server itself.
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
    )
    if os.geteuid() == 0:
        for f in ("server.crt", "server.key", "pg_hba.conf"):
            shutil.chown(data / f, "postgres")
    port = free_port()
    proc = subprocess.Popen(
        [*_as_postgres(), str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(d),
         "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    server = TlsPostgres(port, ca)
    engine = make_engine(server.url("verify-full"))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                break
            except OperationalError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the TLS PostgreSQL did not answer"
                time.sleep(0.2)
        yield server
    finally:
        engine.dispose()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def _ssl_in_use(url: str) -> bool:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
            )
    finally:
        engine.dispose()


def test_verify_full_connects_over_tls_by_ip_and_by_name(tls_postgres: TlsPostgres) -> None:
    assert _ssl_in_use(tls_postgres.url("verify-full"))
    assert _ssl_in_use(tls_postgres.url("verify-full", host="localhost"))


def test_verify_full_refuses_a_server_another_ca_signed(tls_postgres: TlsPostgres, tmp_path: Path) -> None:
    other_ca, _cert, _key = make_ca_and_server_cert(tmp_path, "other")
    with pytest.raises(OperationalError, match=r"(?i)certificate"):
        _ssl_in_use(tls_postgres.url("verify-full", ca=other_ca))
    # `require` encrypts but accepts any certificate: it connects whoever answers.
    assert _ssl_in_use(tls_postgres.url("require"))
    with pytest.raises(OperationalError):
        _ssl_in_use(tls_postgres.url("disable"))  # the server accepts TLS only


def test_migrate_runs_over_verify_full(tls_postgres: TlsPostgres, tmp_path: Path) -> None:
    env = {**os.environ, "TICKETRELAY_DATABASE_URL": tls_postgres.url("verify-full")}
    done = subprocess.run(
        [str(ROOT / "ticketrelay"), "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    engine = make_engine(tls_postgres.url("verify-full"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM ticket_issuances")).scalar() == 0
    finally:
        engine.dispose()
