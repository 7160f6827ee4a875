"""Intake's memory with huge entries waiting: publishes N entries of S MB (default 100 x 50 MB)
plus a few valid bookings to a real Redis, then drains them with Intake.run_once in a fresh
child process and reports its RSS before, after, and at its peak (VmHWM).

    python -m bench.intake_memory --redis-url redis://127.0.0.1:6379/13 [--entries 100] [--mb 50]
        [--baseline]   also: RSS of a child that reads ONE such entry with a plain XREADGROUP

The Redis database given must be empty (it is checked) and is flushed at the end: N x S MB sit
in Redis meanwhile (100 x 50 MB: 5 GB), so pick a server with the room. The bookings stream,
group and every other key live only in that database.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from worker import redis_clients

STREAM = "ticketrelay:bookings"
GROUP = "ticketrelay-intake"
MB = 1024 * 1024


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def child_intake(redis_url: str, database_url: str, expected: int) -> dict[str, object]:
    """Runs in the child: drain the stream with a real Intake, measuring RSS."""
    from worker.db import make_engine
    from worker.intake import Intake
    from worker.ops.migrate import upgrade
    from worker.settings import Settings, sandbox_accounts

    upgrade(database_url)
    settings = Settings(
        redis_url=redis_url, database_url=database_url, consumer_name="bench", intake_block_ms=50
    )
    client = redis_clients.client("intake", settings)
    intake = Intake(
        client, make_engine(database_url), settings, sandbox_accounts("http://sandbox"), lambda _k: None
    )
    intake.ensure_group()
    before_kb = _status_kb("VmRSS")
    started = time.monotonic()
    done = intake.processed
    reads = 0
    while done < expected and time.monotonic() - started < 600:
        intake.run_once()
        reads += 1
        done = intake.processed
    return {
        "processed": done,
        "reads": reads,
        "seconds": round(time.monotonic() - started, 1),
        "rss_before_mib": round(before_kb / 1024, 1),
        "rss_after_mib": round(_status_kb("VmRSS") / 1024, 1),
        "rss_peak_mib": round(_status_kb("VmHWM") / 1024, 1),
        "dead_letters": client.xlen(settings.dead_stream),
        "dead_letter_bytes_max": max(
            (sum(len(k) + len(v) for k, v in f.items()) for _i, f in client.xrange(settings.dead_stream)),
            default=0,
        ),
    }


def child_baseline(redis_url: str) -> dict[str, object]:
    """Runs in the child: what ONE plain XREADGROUP of one such entry costs the process."""
    client = redis_clients.for_url(redis_url, "ops")
    # From after the first entry (a valid booking): the read takes the first huge one.
    [(first, _f)] = client.xrange(STREAM, count=1)
    client.xgroup_create(STREAM, "bench-baseline", id=first)
    client.ping()
    before_kb = _status_kb("VmRSS")
    reply = client.xreadgroup("bench-baseline", "b", {STREAM: ">"}, count=1)
    size = sum(len(k) + len(v) for _s, items in reply for _i, f in items for k, v in f.items())
    return {
        "entry_bytes": size,
        "rss_before_mib": round(before_kb / 1024, 1),
        "rss_after_mib": round(_status_kb("VmRSS") / 1024, 1),
        "rss_peak_mib": round(_status_kb("VmHWM") / 1024, 1),
    }


def _envelope_prefix(i: int) -> bytes:
    head = {"message_id": f"huge-{i}", "provider": "eguma", "account": "default"}
    return json.dumps(head)[:-1].encode() + b', "payload": {"pad": "'


def publish(client: redis.Redis, entries: int, mb: int) -> int:
    """N huge entries, with a valid booking before each tenth of them; how many in all."""
    from worker.devtools.demo import demo_envelopes

    valid = next(e for e in demo_envelopes("bench") if e["provider"] == "eguma")
    filler = b"x" * (mb * MB)
    total = 0
    for i in range(entries):
        if i % 10 == 0:
            client.xadd(STREAM, {"message": json.dumps({**valid, "message_id": f"ok-{i}"})})
            total += 1
        client.xadd(STREAM, {"message": _envelope_prefix(i) + filler + b'"}}'})
        total += 1
    return total


def _run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.intake_memory", *args], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--entries", type=int, default=100)
    p.add_argument("--mb", type=int, default=50)
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--child", choices=["intake", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--database-url", help=argparse.SUPPRESS)
    p.add_argument("--expected", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == "intake":
        print(json.dumps(child_intake(args.redis_url, args.database_url, args.expected)))
        return 0
    if args.child == "baseline":
        print(json.dumps(child_baseline(args.redis_url)))
        return 0

    client = redis_clients.for_url(args.redis_url, "ops")
    # The test sessions' lock on a database (tests/conftest.py): they leave this one alone.
    base, _, db = args.redis_url.rpartition("/")
    admin = redis_clients.for_url(f"{base}/0", "ops")
    lock, token = f"ticketrelay:test-session-lock:{db}", f"bench-{time.time()}"
    if db == "0" or not admin.set(lock, token, nx=True, ex=3600):
        print(f"database {db} is db 0 or taken by a test session: pick another", file=sys.stderr)
        return 2
    if client.dbsize():
        admin.delete(lock)
        print(f"{args.redis_url} is not empty: refusing to use it", file=sys.stderr)
        return 2
    report: dict[str, object] = {"entries": args.entries, "entry_mb": args.mb}
    try:
        mem0 = int(client.info("memory")["used_memory"])
        started = time.monotonic()
        total = publish(client, args.entries, args.mb)
        report["published"] = total
        report["publish_s"] = round(time.monotonic() - started, 1)
        report["redis_used_memory_mib"] = round((int(client.info("memory")["used_memory"]) - mem0) / MB)
        if args.baseline:
            report["baseline_one_plain_xreadgroup"] = _run_child(
                "--child", "baseline", "--redis-url", args.redis_url
            )
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_url = f"sqlite:///{tmp}/bench.db"
            report["intake"] = _run_child(
                "--child",
                "intake",
                "--redis-url",
                args.redis_url,
                "--database-url",
                sqlite_url,
                "--expected",
                str(total),
            )
    finally:
        client.flushdb()
        if admin.get(lock) == token.encode():
            admin.delete(lock)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
