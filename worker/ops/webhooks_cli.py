"""`ticketrelay webhooks list|replay|purge|check`: the operator's view of the webhook outbox.

Registered by worker/ops/cli.py through add_parser(). Listings show the receiver's URL without
its query string (it can hold the receiver's token) and never a body or a secret.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any, cast

from worker.ledger import as_utc, utcnow

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def when(value: str) -> datetime:
    """A moment: ISO 8601, or a duration back from now (30m, 24h, 7d)."""
    m = _DURATION.match(value.strip())
    if m:
        return utcnow() - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither ISO 8601 nor a duration like 24h or 7d"
        ) from None
    return as_utc(parsed) or parsed


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "webhooks", help="signed HTTP callbacks: list, replay, purge, check (docs/webhooks.md)"
    )
    sub = p.add_subparsers(dest="webhooks_command", required=True)

    sp = sub.add_parser("list", help="outbox entries, newest first")
    sp.add_argument(
        "--state",
        choices=["pending", "dead", "delivered", "all"],
        action="append",
        help="repeatable; default: pending and dead",
    )
    sp.add_argument("--key", help="only this idempotency key")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser(
        "replay", help="send entries again, due now, with a fresh attempt budget (same webhook-id)"
    )
    sp.add_argument("ids", nargs="*", type=int, help="outbox entry ids (from `webhooks list`)")
    sp.add_argument("--key", help="every entry of this idempotency key")
    sp.add_argument("--dead", action="store_true", help="every dead entry (with --since: queued since then)")
    sp.add_argument("--since", type=when, help="ISO 8601 or a duration back from now (24h, 7d)")
    sp.add_argument(
        "--delivered", action="store_true", help="also entries already delivered (with ids or --key)"
    )
    sp.set_defaults(fn=cmd_replay)

    sp = sub.add_parser("purge", help="delete old delivered (and, if asked, dead) entries")
    sp.add_argument(
        "--delivered-older-than", type=when, default="7d", help="default 7d; pending entries are never purged"
    )
    sp.add_argument("--dead-older-than", type=when, help="also dead entries older than this (default: keep)")
    sp.set_defaults(fn=cmd_purge)

    sp = sub.add_parser("check", help="accounts whose callbacks could not go out, and outbox counts")
    sp.set_defaults(fn=cmd_check)
    return p


def _engine() -> Any:
    from worker.db import get_engine

    return get_engine()


def _row(e: Any) -> dict[str, Any]:
    from worker.webhooks.config import safe_url

    return {
        "id": e.id,
        "state": e.state,
        "idempotency_key": e.idempotency_key,
        "revision": e.revision,
        "account": f"{e.provider}.{e.account}",
        "url": safe_url(e.url),
        "webhook_id": e.webhook_id,
        "attempts": e.attempts,
        "last_status": e.last_status,
        "last_error": e.last_error,
        "created_at": e.created_at.isoformat(),
        "next_attempt_at": e.next_attempt_at.isoformat() if e.state == "pending" else None,
        "delivered_at": e.delivered_at.isoformat() if e.delivered_at else None,
        "dead_at": e.dead_at.isoformat() if e.dead_at else None,
    }


def cmd_list(args: argparse.Namespace) -> int:
    from worker.webhooks import outbox

    chosen: list[str] = args.state or ["pending", "dead"]
    states = cast(list[outbox.State], ["pending", "dead", "delivered"] if "all" in chosen else chosen)
    rows = [_row(e) for e in outbox.entries(_engine(), states=states, key=args.key, limit=args.limit)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no entries")
        return 0
    for r in rows:
        when_text = {"pending": r["next_attempt_at"], "dead": r["dead_at"], "delivered": r["delivered_at"]}[
            r["state"]
        ]
        print(
            f"{r['id']:>8}  {r['state']:<9} {r['idempotency_key']} r{r['revision']}  {r['account']}  "
            f"{r['url']}  attempts={r['attempts']}  {r['state']}:{when_text}"
        )
        if r["last_error"]:
            print(f"{'':>10}last: {r['last_status'] or '-'} {r['last_error']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from worker.webhooks import outbox

    if not (args.ids or args.key or args.dead):
        print("ticketrelay webhooks replay: give entry ids, --key KEY or --dead", file=sys.stderr)
        return 2
    states: list[outbox.State] = ["dead"] if args.dead and not (args.ids or args.key) else ["dead", "pending"]
    if args.delivered:
        states.append("delivered")
    n = outbox.replay(_engine(), ids=args.ids or None, key=args.key, states=states, since=args.since)
    print(f"replayed {n} entr{'y' if n == 1 else 'ies'}: due now, same webhook-id, fresh attempt budget")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from worker.webhooks import outbox

    n = outbox.purge(_engine(), args.delivered_older_than, args.dead_older_than)
    print(f"purged {n} entr{'y' if n == 1 else 'ies'}")
    return 0


def cmd_check(_args: argparse.Namespace) -> int:
    from worker.settings import get_accounts, get_settings
    from worker.webhooks import outbox
    from worker.webhooks.config import configuration_problems, safe_url

    settings = get_settings()
    accounts = get_accounts(settings)
    with_callbacks = [a for a in accounts.values() if a.callback_url]
    for a in with_callbacks:
        print(f"{a.provider}.{a.name}: {safe_url(a.callback_url or '')}")
    if not with_callbacks:
        print("no account has a callback_url: results go to the result stream only")
    problems = configuration_problems(accounts, settings)
    for problem in problems:
        print(f"problem: {problem}")
    counts = outbox.counts(_engine())
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 1 if problems else 0
