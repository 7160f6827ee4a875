"""Operator commands for single bookings: `ticketrelay show`, `list`, `resolve`, `retry`
(docs/operator.md).

- `show KEY` (or `--message-id ID`): the row, its attempt history, and the results of the key
  found on its results stream (the newest `--scan` entries).
- `list --status needs_review [--provider P] [--account A] [--older-than 2h]`.
- `resolve KEY --issued --reference R [--tickets FILE]` or `--failed --reason TEXT`: settles a
  needs_review booking (or a failed one, as issued), records who (`--by`, default $USER) and
  why in the row and the attempt history, and publishes the corrected result with its revision
  raised (contract 1.1).
- `retry KEY`: re-drives the key now, through the same reconciliation as any attempt in doubt
  (the row keeps in_doubt: the adapter asks the provider first, never a blind re-send).

Every command takes `--json`. Errors are one line on stderr. Exit codes: 0 ok, 1 not found or
refused, 2 usage, 3 a store unreachable. All SQL goes through worker/ledger.py. The payload
(customer data) is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from schemas.result import Ticket
from schemas.statuses import Status
from schemas.table import TicketIssuance
from worker import ledger
from worker.settings import AccountConfig, Settings

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

EPILOG = """exit codes:
  0  ok
  1  not found, or refused (the booking's state does not allow it)
  2  usage: a bad argument or file
  3  a store is unreachable: Redis or the database does not answer"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The row's fields `show` and `list` print: never the payload (personal data).
ROW_FIELDS = (
    "idempotency_key",
    "message_id",
    "provider",
    "account",
    "generation",
    "status",
    "revision",
    "attempts",
    "attempts_base",
    "in_doubt",
    "provider_reference",
    "tickets",
    "error_type",
    "error_message",
    "http_status",
    "reply_to",
    "metadata",
    "created_at",
    "updated_at",
    "completed_at",
    "callback_sent_at",
    "next_attempt_at",
    "first_attempt_at",
    "redriven_at",
    "resolved_by",
    "resolved_at",
    "resolution",
    "reissue_run",
)


class BookingError(Exception):
    """A one-line answer for the operator, with the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Stores:
    engine: Engine
    client: redis.Redis
    settings: Settings
    accounts: dict[tuple[str, str], AccountConfig]
    enqueue: Callable[[str], None]


def _default_stores() -> Stores:
    from worker.app import enqueue_issue
    from worker.db import get_engine
    from worker.redis_clients import client as redis_client
    from worker.settings import get_accounts, get_settings

    settings = get_settings()
    client = redis_client("ops", settings)
    return Stores(get_engine(), client, settings, get_accounts(settings), enqueue_issue)


# --- output --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (ledger.as_utc(value) or value).isoformat()
    return value


def row_view(row: TicketIssuance) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ROW_FIELDS:
        source = "message_metadata" if name == "metadata" else name
        out[name] = _plain(getattr(row, source, None))
    return out


def attempt_view(a: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in a.items() if k != "id"}


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        print(text)


def _age(value: Any) -> str:
    when = ledger.as_utc(value)
    if when is None:
        return "-"
    s = max((ledger.utcnow() - when).total_seconds(), 0.0)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


# --- arguments -----------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise BookingError(f"{text!r} is not a duration like 90s, 30m, 2h or 7d", EXIT_USAGE)
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _read_tickets(path: str) -> list[Ticket]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BookingError(f"cannot read {path}: {exc.strerror or type(exc).__name__}", EXIT_USAGE) from None
    except ValueError as exc:
        raise BookingError(f"{path} is not JSON: {exc}", EXIT_USAGE) from None
    if isinstance(data, dict) and "tickets" in data:
        data = data["tickets"]
    if not isinstance(data, list) or not data:
        raise BookingError(f"{path}: expected a non-empty JSON list of tickets", EXIT_USAGE)
    try:
        return [Ticket.model_validate(t) for t in data]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BookingError(f"{path}: ticket {where}: {first['msg']}", EXIT_USAGE) from None


def _operator(args: argparse.Namespace) -> str:
    by = (args.by or os.environ.get("USER") or os.environ.get("LOGNAME") or "").strip()
    if not by:
        raise BookingError("who settles this? pass --by NAME ($USER is not set)", EXIT_USAGE)
    return by


@contextlib.contextmanager
def _operator_refusals(key: str) -> Iterator[None]:
    """An operator step on one key (resolve, retry): the ledger's refusals as the command's
    one-line errors."""
    try:
        yield
    except LookupError:
        raise BookingError(f"no booking with idempotency key {key}") from None
    except ledger.Refused as exc:
        raise BookingError(str(exc)) from None


def _the_row(stores: Stores, key: str) -> TicketIssuance:
    row = ledger.get(stores.engine, key)
    if row is None:
        raise BookingError(f"no booking with idempotency key {key}")
    return row


# --- results on the stream -----------------------------------------------------------------------


def results_on_stream(client: redis.Redis, stream: str, key: str, scan: int) -> list[dict[str, Any]]:
    """The results of `key` among the newest `scan` entries of `stream`, oldest first."""
    found: list[dict[str, Any]] = []
    entries: list[tuple[Any, dict[Any, Any]]] = client.xrevrange(stream, count=scan) or []  # type: ignore[assignment]
    for entry_id, fields in entries:
        raw = (fields or {}).get(b"result") or (fields or {}).get("result")
        if raw is None:
            continue
        try:
            result = json.loads(raw)
        except ValueError:
            continue
        if isinstance(result, dict) and result.get("idempotency_key") == key:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            found.append({"entry_id": eid, **result})
    found.reverse()
    return found


def publish(stores: Stores, row: TicketIssuance) -> None:
    """The corrected final result, through the issue path's own publishing (results stream,
    callback_sent_at, webhooks)."""
    from worker.issuing import ClientCache, Deps, publish_finals

    deps = Deps(
        engine=stores.engine,
        redis=stores.client,
        settings=stores.settings,
        accounts=stores.accounts,
        clients=ClientCache(),
    )
    publish_finals(deps, [row])


# --- the commands --------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace, stores: Stores) -> int:
    if (args.key is None) == (args.message_id is None):
        raise BookingError("give either KEY or --message-id ID", EXIT_USAGE)
    if args.key is not None:
        rows = [_the_row(stores, args.key)]
    else:
        rows = ledger.find_by_message_id(stores.engine, args.message_id)
        if not rows:
            raise BookingError(f"no booking with message_id {args.message_id}")
    out: list[dict[str, Any]] = []
    for row in rows:
        stream = row.reply_to or stores.settings.results_stream
        out.append(
            {
                "row": row_view(row),
                "attempts": [attempt_view(a) for a in ledger.attempts_of(stores.engine, row.idempotency_key)],
                "results": results_on_stream(stores.client, stream, row.idempotency_key, args.scan),
            }
        )
    lines: list[str] = []
    for item in out:
        r = item["row"]
        lines.append(
            f"{r['idempotency_key']}  {r['status']}  revision {r['revision']}  "
            f"{r['provider']}/{r['account']}  message_id {r['message_id']}  generation {r['generation']}"
        )
        lines.append(
            f"  attempts {r['attempts']} (budget from {r['attempts_base']})  in_doubt {r['in_doubt']}  "
            f"reference {r['provider_reference'] or '-'}  tickets {len(r['tickets'] or [])}"
        )
        if r["error_type"]:
            lines.append(
                f"  last error {r['error_type']} (HTTP {r['http_status'] or '-'}): {r['error_message']}"
            )
        if r["resolved_by"]:
            lines.append(f"  settled by {r['resolved_by']} at {r['resolved_at']}: {r['resolution']}")
        lines.append(f"  created {r['created_at']}  completed {r['completed_at'] or '-'}")
        lines.append("  attempts:")
        for a in item["attempts"] or []:
            err = f" {a['error_type']}" if a["error_type"] else ""
            status = f" HTTP {a['http_status']}" if a["http_status"] else ""
            took = f" {a['duration_ms']:.0f} ms" if a["duration_ms"] is not None else ""
            probe = " probe" if a["probe"] else ""
            doubt = " in_doubt" if a["in_doubt"] else ""
            head = f"    #{a['attempt']} {a['started_at']} {a['worker']} {a['outcome']}"
            lines.append(f"{head}{status}{err}{took}{probe}{doubt}")
            if a["message"]:
                lines.append(f"       {a['message']}")
        if not item["attempts"]:
            lines.append("    (none)")
        lines.append(f"  results on {row.reply_to} (newest {args.scan} entries scanned):")
        for res in item["results"]:
            lines.append(f"    {res['entry_id']} revision {res.get('revision', 1)} {res['status']}")
        if not item["results"]:
            lines.append("    (none found)")
    _emit(args, out if args.message_id is not None else out[0], "\n".join(lines))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, stores: Stores) -> int:
    if args.status not in {s.value for s in Status}:
        raise BookingError(
            f"unknown status {args.status!r}; one of {', '.join(s.value for s in Status)}", EXIT_USAGE
        )
    if args.limit < 1:
        raise BookingError("--limit must be 1 or more", EXIT_USAGE)
    older = parse_duration(args.older_than) if args.older_than else None
    rows = ledger.list_bookings(
        stores.engine,
        args.status,
        provider=args.provider,
        account=args.account,
        older_than_s=older,
        limit=args.limit,
    )
    data = [row_view(r) for r in rows]
    lines = [
        f"{r.idempotency_key}  {r.provider}/{r.account}  {r.message_id}  attempts {r.attempts}  "
        f"age {_age(r.completed_at or r.updated_at)}  {r.error_type or '-'}"
        for r in rows
    ]
    lines.append(
        f"{len(rows)} booking(s) {args.status}" + (" (limit reached)" if len(rows) == args.limit else "")
    )
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace, stores: Stores) -> int:
    if args.issued == args.failed:
        raise BookingError("give exactly one of --issued or --failed", EXIT_USAGE)
    if args.failed and not (args.reason or "").strip():
        raise BookingError("--failed needs --reason TEXT (what was found at the provider)", EXIT_USAGE)
    if args.failed and (args.reference or args.tickets):
        raise BookingError("--reference and --tickets go with --issued", EXIT_USAGE)
    if args.issued and not (args.reference or "").strip():
        raise BookingError("--issued needs --reference R (the provider's booking/order id)", EXIT_USAGE)
    tickets = _read_tickets(args.tickets) if args.tickets else None
    by = _operator(args)
    reason = (args.reason or "").strip() or "confirmed at the provider"
    with _operator_refusals(args.key):
        row = ledger.resolve(
            stores.engine,
            args.key,
            issued=args.issued,
            reason=reason,
            by=by,
            reference=args.reference,
            tickets=tickets,
        )
    published = True
    try:
        publish(stores, row)
    except (redis.ConnectionError, redis.TimeoutError):
        # Recorded: the sweeper publishes a final row whose callback_sent_at is empty.
        published = False
    data = {"row": row_view(row), "published": published}
    text = f"{row.idempotency_key} settled {row.status} by {by} (revision {row.revision}); " + (
        "result published" if published else "result not published yet: Redis unreachable, the sweeper will"
    )
    _emit(args, data, text)
    return EXIT_OK if published else EXIT_UNREACHABLE


def cmd_retry(args: argparse.Namespace, stores: Stores) -> int:
    by = _operator(args)
    with _operator_refusals(args.key):
        row = ledger.redrive(stores.engine, args.key, by=by, reason=(args.reason or "").strip())
    enqueued = True
    try:
        stores.enqueue(row.idempotency_key)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        enqueued = False  # queued in SQL: the sweeper re-drives it within stale_after_s
    how = (
        "in doubt: the provider is asked first what became of the earlier attempts"
        if row.in_doubt
        else "not in doubt: the provider refused or was never reached"
    )
    data = {"row": row_view(row), "enqueued": enqueued}
    text = f"{row.idempotency_key} re-driven with the same key by {by} ({how})" + (
        "" if enqueued else "; not enqueued (broker unreachable): the sweeper picks it up"
    )
    _emit(args, data, text)
    return EXIT_OK


# --- wiring --------------------------------------------------------------------------------------


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def add_parser(subparsers: Any) -> None:
    """Register show, list, resolve and retry (each its own top-level command)."""
    fmt = argparse.RawDescriptionHelpFormatter
    sp = subparsers.add_parser(
        "show",
        help="one booking: its row, attempt history and results sent",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sp.add_argument("key", nargs="?", help="idempotency key")
    sp.add_argument("--message-id", help="every booking of this producer message_id instead")
    sp.add_argument(
        "--scan", type=int, default=10_000, help="newest results-stream entries to search (10000)"
    )
    _common(sp)
    sp.set_defaults(fn=cmd_bookings, bookings_fn=cmd_show)

    sp = subparsers.add_parser("list", help="bookings in a status", epilog=EPILOG, formatter_class=fmt)
    sp.add_argument("--status", default=Status.NEEDS_REVIEW.value, help="(default needs_review)")
    sp.add_argument("--provider")
    sp.add_argument("--account")
    sp.add_argument("--older-than", help="in that status at least this long: 30m, 2h, 7d")
    sp.add_argument("--limit", type=int, default=100)
    _common(sp)
    sp.set_defaults(fn=cmd_bookings, bookings_fn=cmd_list)

    sp = subparsers.add_parser(
        "resolve", help="settle a needs_review booking by hand", epilog=EPILOG, formatter_class=fmt
    )
    sp.add_argument("key", help="idempotency key")
    sp.add_argument("--issued", action="store_true", help="the tickets exist at the provider")
    sp.add_argument("--failed", action="store_true", help="nothing exists at the provider")
    sp.add_argument("--reference", help="with --issued: the provider's booking/order id")
    sp.add_argument(
        "--tickets", help="with --issued: a JSON file, a list of {ticket_id, code, category, seat}"
    )
    sp.add_argument("--reason", help="why (required with --failed)")
    sp.add_argument("--by", help="who settles it (default $USER)")
    _common(sp)
    sp.set_defaults(fn=cmd_bookings, bookings_fn=cmd_resolve)

    sp = subparsers.add_parser(
        "retry", help="re-drive one booking now with the same key", epilog=EPILOG, formatter_class=fmt
    )
    sp.add_argument("key", help="idempotency key")
    sp.add_argument("--reason", help="why, for the attempt history")
    sp.add_argument("--by", help="who (default $USER)")
    _common(sp)
    sp.set_defaults(fn=cmd_bookings, bookings_fn=cmd_retry)


def cmd_bookings(args: argparse.Namespace, stores: Stores | None = None) -> int:
    """The `fn` of every command here: one-line errors on stderr, documented exit codes."""
    name = args.command
    try:
        stores = stores or _default_stores()
        code: int = args.bookings_fn(args, stores)
        return code
    except BookingError as exc:
        print(f"ticketrelay {name}: {exc}", file=sys.stderr)
        return exc.code
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"ticketrelay {name}: Redis unreachable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except DBAPIError as exc:
        from worker.ops import errors

        problem = errors.describe(exc, stores.settings if stores is not None else None)
        if problem is not None:
            print(f"ticketrelay {name}: {problem.message}", file=sys.stderr)
            return problem.code
        print(f"ticketrelay {name}: database error ({type(exc.orig).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except SQLAlchemyError as exc:
        print(f"ticketrelay {name}: database error ({type(exc).__name__})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as exc:  # the settings or the accounts file did not load
        from worker.ops import errors

        problem = errors.describe(exc, None)
        if problem is None:
            raise
        print(f"ticketrelay {name}: {problem.message}", file=sys.stderr)
        return problem.code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketrelay")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None, stores: Stores | None = None) -> int:
    """`python -m worker.ops.bookings show KEY` works too (and tests pass their own stores)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return cmd_bookings(args, stores)


if __name__ == "__main__":
    raise SystemExit(main())
