"""`ticketrelay reissue`: the command-line front of worker.ops.reissue, with a progress bar."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from worker.ops import errors
from worker.ops.progress import ProgressReporter
from worker.ops.reissue import ReissueRefused, Run, Selection
from worker.ops.reissue.selection import PAYLOAD_GONE, PAYLOAD_GONE_REASON
from worker.providers import PROVIDER_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", choices=PROVIDER_NAMES, help="only this provider")
    p.add_argument("--account", help="only this account")
    p.add_argument(
        "--status",
        default="failed",
        help="comma-separated statuses to select (default failed; issued rows are always skipped "
        "unless --new-generation)",
    )
    p.add_argument("--retryable-only", action="store_true", help="only rows whose last error was retryable")
    p.add_argument("--since", help="created at or after: ISO 8601 or a duration back from now (24h, 7d)")
    p.add_argument("--until", help="created before: ISO 8601 or a duration back from now")
    p.add_argument("--limit", type=int, help="at most this many rows")
    p.add_argument("--file", help="a JSONL export of envelopes instead of a selection")
    p.add_argument(
        "--new-generation",
        action="store_true",
        help="issue NEW tickets under a new key (generation + 1); refused where unsafe",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would happen and change nothing")
    p.add_argument("--resume", metavar="RUN_ID", help="resume a stopped run")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    from worker import redis_clients
    from worker.app import enqueue_issue, enqueue_issue_many
    from worker.db import get_engine
    from worker.settings import get_accounts, get_settings

    settings = get_settings()
    selection = Selection(
        provider=args.provider,
        account=args.account,
        statuses=[s for s in args.status.split(",") if s],
        retryable_only=args.retryable_only,
        since=args.since,
        until=args.until,
        limit=args.limit,
        new_generation=args.new_generation,
    )
    if args.file and not Path(args.file).is_file():
        print(f"ticketrelay reissue: cannot read {args.file}: no such file", file=sys.stderr)
        return errors.USAGE
    try:
        selection.validate()
    except ValueError as exc:
        print(f"ticketrelay reissue: {exc}", file=sys.stderr)
        return errors.USAGE
    r = Run(
        get_engine(),
        # A run feeds for hours: the worker's client, which rides out a Redis restart.
        redis_clients.client("worker", settings),
        settings,
        lambda key: enqueue_issue(key, bulk=True),
        run_id=args.resume,
        selection=selection,
        enqueue_many=lambda keys: enqueue_issue_many(keys, bulk=True),
    )
    if args.resume and not args.dry_run and not r.load_or_create():
        print(f"ticketrelay reissue: no run {args.resume!r} to resume", file=sys.stderr)
        return errors.USAGE
    if args.file and args.new_generation:
        print("ticketrelay reissue: --new-generation works on a selection, not on --file", file=sys.stderr)
        return errors.USAGE
    try:
        r.check_safe()
    except ReissueRefused as exc:
        print(f"ticketrelay reissue: {exc}", file=sys.stderr)
        return errors.USAGE
    if args.dry_run:
        return _dry_run(r, args, get_accounts(settings))

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not r.lock():
        print(f"ticketrelay reissue: run {r.run_id} is being fed elsewhere", file=sys.stderr)
        return errors.FAILED
    try:
        if not args.resume:
            r.load_or_create()
        print(f"run {r.run_id}: {'resuming' if args.resume else 'starting'}", file=sys.stderr)
        show = ProgressReporter(sys.stderr)
        try:
            if args.file:
                with Path(args.file).open() as fh:
                    r.drive_envelopes(fh, get_accounts(settings))
                completed = r.wait_until_final(stop, show)
            else:
                completed = r.feed(stop, show)
        finally:
            show.close()
        report = r.finish(completed)
    finally:
        r.unlock()
    print(json.dumps(report, indent=2, default=str))
    gone = report.get("skipped", {}).get(PAYLOAD_GONE, 0)
    if gone:
        print(f"{gone} booking(s) not re-driven: {PAYLOAD_GONE_REASON}", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    if not completed:
        print(
            f"stopped; what was handed to the workers finishes. Resume with: "
            f"ticketrelay reissue --resume {r.run_id}",
            file=sys.stderr,
        )
        return errors.STOPPED
    return errors.OK


def _dry_run(r: Run, args: argparse.Namespace, accounts: dict[Any, Any]) -> int:
    if args.file:
        from worker import ledger
        from worker.validation import Accepted, validate_entry

        verdicts: dict[str, int] = {}
        with Path(args.file).open() as fh:
            for line in fh:
                if not line.strip():
                    continue
                v = validate_entry({"message": line.encode()}, r.settings, accounts)
                if not isinstance(v, Accepted):
                    what = f"invalid ({v.error_type})"
                else:
                    row = ledger.get(r.engine, v.idempotency_key)
                    what = (
                        "new booking: would be created"
                        if row is None
                        else "different payload: skipped"
                        if row.payload_sha256 != v.payload_sha256
                        else "issued: skipped"
                        if row.status == "issued"
                        else f"{row.status}: would be re-driven"
                        if row.status in ("failed", "needs_review")
                        else f"{row.status}: skipped (already moving)"
                    )
                verdicts[what] = verdicts.get(what, 0) + 1
        for what, n in sorted(verdicts.items()):
            print(f"{n:>8}  {what}")
        return 0
    counts = r.candidates_count()
    if not counts:
        print("nothing matches the selection")
    for (provider, status), n in sorted(counts.items()):
        if args.new_generation:
            what = "a new generation (new key, new tickets) would be issued"
        elif status == "issued":
            what = "already issued: skipped"
        elif status in ("failed", "needs_review"):
            what = "would be re-driven with the original key"
        else:
            what = "skipped (not final)"
        print(f"{n:>8}  {provider:<20} {status:<13} {what}")
    gone = r.store.without_payload(r.selection) if counts and not args.new_generation else 0
    if gone:
        print(f"{gone:>8}  of these would be skipped: {PAYLOAD_GONE_REASON}")
    return 0
