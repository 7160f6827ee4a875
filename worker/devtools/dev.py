"""`ticketrelay dev` and `ticketrelay demo`: the whole system on one machine."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from worker import redis_clients
from worker.devtools.demo import demo_envelopes
from worker.devtools.embedded import redis_answers, start_for_url
from worker.devtools.supervisor import Supervisor
from worker.ops.migrate import upgrade
from worker.producer import publish
from worker.settings import Settings, get_settings, mask_url

OPTIONAL = ("flower", "metrics")
# The intake consumer of `ticketrelay dev` on this machine: a consumer of the group by another
# name belongs to some other ticketrelay using the same Redis.
DEV_CONSUMER_PREFIX = f"ticketrelay-dev-{socket.gethostname()}"


def foreign_consumers(client: redis.Redis, s: Settings) -> list[str]:
    """Consumers of the intake group that are not a `ticketrelay dev` of this machine (a past
    run's stay registered: Redis keeps consumers until they are deleted)."""
    try:
        consumers: Any = client.xinfo_consumers(s.intake_stream, s.intake_group)
    except redis.ResponseError:  # no stream, or no group yet: nobody consumes
        return []
    names = [c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"]) for c in consumers]
    return [n for n in names if not n.startswith(DEV_CONSUMER_PREFIX)]


def _port_open(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=0.3):
            return True
    except OSError:
        return False


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _print_results(results: list[dict[str, Any]]) -> None:
    print(f"\n{'provider':<20} {'status':<12} {'att':>3}  {'reference':<38} tickets (code)")
    for r in sorted(results, key=lambda r: r["provider"]):
        codes = ", ".join(str(t.get("code")) for t in r["tickets"]) or "-"
        err = f"  error: {r['error']['type']}: {r['error']['message']}" if r.get("error") else ""
        print(
            f"{r['provider']:<20} {r['status']:<12} {r['attempts']:>3}  "
            f"{r['provider_reference'] or '-'!s:<38} {codes}{err}"
        )


def run_dev(demo: bool, exit_when_done: bool, timeout_s: float = 90.0, join: bool = False) -> int:
    s = get_settings()
    if s.accounts_file is None:
        # Choosing dev without accounts is choosing the sandbox; the processes started below
        # inherit the choice (without it they refuse to start).
        os.environ["TICKETRELAY_SANDBOX"] = "1"
    if not join and redis_answers(s.redis_url):
        others = foreign_consumers(redis_clients.client("ops", s), s)
        if others:
            print(
                f"ticketrelay dev: the intake group {s.intake_group} on {mask_url(s.redis_url)} already "
                f"has {len(others)} consumer(s) that are not this dev's (e.g. {others[0]}): another "
                "ticketrelay may be using this Redis; pass --join to join it anyway, or set "
                "TICKETRELAY_REDIS_URL to another Redis",
                file=sys.stderr,
            )
            return 2
    state = Path(".ticketrelay")
    sup = Supervisor(log_dir=state / "logs")
    embedded = None
    stopping = False

    def on_signal(_n: int, _f: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if redis_answers(s.redis_url):
            print(f"redis     {mask_url(s.redis_url)} (already running, used as it is)")
        else:
            embedded = start_for_url(s.redis_url)
            print(f"redis     {mask_url(s.redis_url)} (embedded valkey-server, nothing kept on disk)")
        if s.accounts_file is None:
            if not _port_open(s.sandbox_url):
                sup.start(
                    "sandbox",
                    [
                        "sandbox",
                        "--host",
                        urlparse(s.sandbox_url).hostname or "127.0.0.1",
                        "--port",
                        str(urlparse(s.sandbox_url).port or 8765),
                    ],
                )
                _wait(lambda: _port_open(s.sandbox_url), 20, "the sandbox")
            print(
                f"providers {s.sandbox_url} (no TICKETRELAY_ACCOUNTS_FILE set: the built-in "
                "provider SANDBOX answers; no real provider is called)"
            )
        else:
            print(f"providers real accounts from {s.accounts_file}")
        upgrade(s.database_url)
        print(f"database  {mask_url(s.database_url)}")
        consumer = {"TICKETRELAY_CONSUMER_NAME": f"{DEV_CONSUMER_PREFIX}-{os.getpid()}"}
        for name in ("intake", "worker", "beat"):
            sup.start(name, [name], consumer if name == "intake" else None)
        print(f"processes intake, worker, beat (logs in {sup.log_dir}/)")
        flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"ops:{secrets.token_urlsafe(12)}"
        flower_port = str(s.flower_port)
        sup.start(
            "flower",
            ["flower", f"--port={flower_port}", "--address=127.0.0.1"],
            {"FLOWER_BASIC_AUTH": flower_auth},
        )
        print(
            f"flower    http://127.0.0.1:{flower_port}/  user {flower_auth.split(':', 1)[0]}  "
            f"password {flower_auth.split(':', 1)[1]}"
        )
        sup.start("metrics", ["metrics"])
        print(f"metrics   http://{s.metrics_host}:{s.metrics_port}/metrics  (Prometheus)")
        print(
            f"publish   XADD {s.intake_stream} * message '<JSON envelope>'   "
            f"(or: ./ticketrelay publish FILE.jsonl)"
        )
        print(f"results   XREAD STREAMS {s.results_stream} 0")
        client = redis_clients.client("ops", s)
        wanted: set[str] = set()
        start_id = f"{int(time.time() * 1000) - 1}-0"
        if demo:
            for env in demo_envelopes():
                publish(client, env, s.intake_stream)
                wanted.add(env["message_id"])
            print(f"demo      published {len(wanted)} sample bookings, one per provider")
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        last_view = 0.0
        view = LiveView()
        optional_dead: set[str] = set()
        while not stopping:
            dead = [n for n in sup.dead() if n not in optional_dead]
            for name in [n for n in dead if n in OPTIONAL]:
                # Flower and the exporter are for watching; their port may be taken. Say so and
                # go on: the bookings do not need them.
                print(f"{name} exited (port in use?); see {sup.log_dir}/{name}.log; going on without it")
                optional_dead.add(name)
            dead = [n for n in dead if n not in OPTIONAL]
            if dead:
                print(f"process(es) exited: {', '.join(dead)}; see {sup.log_dir}/")
                return 1
            entries: Any = client.xrange(s.results_stream, min=start_id)
            for _id, fields in entries:
                r = json.loads(fields[b"result"])
                if r["message_id"] in wanted:
                    seen[r["message_id"]] = r
            if exit_when_done:
                if wanted and len(seen) == len(wanted):
                    _print_results(list(seen.values()))
                    ok = all(r["status"] == "issued" for r in seen.values())
                    print("\nall demo bookings issued" if ok else "\nsome demo bookings did not issue")
                    return 0 if ok else 1
                if time.monotonic() > deadline:
                    print(f"timed out: {len(seen)} of {len(wanted)} results arrived")
                    return 1
            elif time.monotonic() - last_view > 2:
                last_view = time.monotonic()
                view.show(s)
            time.sleep(0.3)
        return 0
    finally:
        print("stopping ...")
        sup.stop(timeout=s.soft_shutdown_timeout_s + 5)
        if embedded is not None:
            embedded.terminate()
            embedded.wait(10)
        print("stopped")


class LiveView:
    """Bookings per status and provider, the issue rate, and the depths of streams and queue.
    Redrawn in place on a terminal, one summary line per refresh otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last_done: int | None = None
        self.last_t = time.monotonic()

    def show(self, s: Any) -> None:
        from schemas.statuses import FINAL_STATUSES
        from worker.ops.status import collect

        data = collect(s)
        by_status = data["bookings"]["by_status"]
        done = sum(n for st, n in by_status.items() if st in FINAL_STATUSES)
        now = time.monotonic()
        rate = 0.0 if self.last_done is None else (done - self.last_done) / max(now - self.last_t, 1e-6)
        self.last_done, self.last_t = done, now
        r = data["redis"]
        depth = (
            f"intake={r.get('intake_stream')} pending={r.get('intake_pending')} "
            f"queue={r.get('celery_queue')} results={r.get('results_stream')} dead={r.get('dead_letters')}"
        )
        age = data["oldest_unfinished_age_s"]
        if not self.tty:
            counts = " ".join(f"{k}={v}" for k, v in sorted(by_status.items())) or "no bookings yet"
            print(f"[{time.strftime('%H:%M:%S')}] {counts} | {rate:.1f}/s | {depth}", flush=True)
            return
        statuses = ["queued", "in_progress", "retrying", "issued", "failed", "rejected", "needs_review"]
        lines = [
            f"ticketrelay dev  {time.strftime('%H:%M:%S')}   Ctrl-C stops everything",
            "",
            f"{'provider':<20}" + "".join(f"{st:>13}" for st in statuses),
        ]
        for provider, counts in sorted(data["bookings"]["by_provider"].items()):
            lines.append(f"{provider:<20}" + "".join(f"{counts.get(st, 0):>13}" for st in statuses))
        lines += [
            "",
            f"finished {done}   rate {rate:.1f} bookings/s   oldest unfinished "
            f"{'-' if age is None else f'{age:.0f}s'}",
            depth,
        ]
        print("\x1b[H\x1b[2J" + "\n".join(lines), flush=True)
