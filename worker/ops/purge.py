"""`ticketrelay purge --message-id ID`: a person's deletion request. Removes every copy of one
message that ticketrelay holds (docs/data-protection.md lists them):

- SQL: each row of the message (every generation; every provider and account unless narrowed)
  loses its payload, tickets, qr_codes and metadata and stays as a tombstone (status, key,
  message_id, payload_sha256, provider_reference), so a resend is answered from the row
  instead of issuing a second ticket; with --delete-rows the rows go too. Their webhook outbox
  entries and attempt history (ticket_attempts, where that table exists) are deleted;
- Redis: entries carrying the message_id in the dead-letter stream, in the bookings stream
  (those every consumer group has acknowledged), and in the results streams (the default one
  and each row's reply_to).

It refuses, changing nothing, while the message is still being worked on: a row not final (its
payload is needed to issue it) or a bookings entry not yet acknowledged. Without --yes it only
shows what it would remove. What it prints holds ids and counts only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine

from schemas.table import TicketIssuance
from worker import ledger, redis_clients, retention
from worker.ops import errors
from worker.settings import Settings, get_settings

SCAN_COUNT = 100  # entries per XRANGE while looking: dead letters may be up to ~270 KB each
LOOK_BYTES = 65536  # of a field that is not JSON, where a message_id is looked for


_PROVIDER = re.compile(rb'"provider"\s*:\s*"([^"]{0,64})"')


class PurgeRefused(RuntimeError):
    """The message is still being worked on; nothing was changed."""


@dataclass
class Plan:
    message_id: str
    provider: str | None
    account: str | None
    rows: list[TicketIssuance]
    # stream name -> ids of the entries of this message in it
    entries: dict[str, list[str]] = field(default_factory=dict)
    # bookings entries of this message not yet acknowledged by every consumer group
    unprocessed: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[TicketIssuance]:
        return [r for r in self.rows if not ledger.is_final(r)]


@dataclass
class Report:
    rows: int = 0
    rows_deleted: bool = False
    outbox: int = 0
    attempts: int = 0
    entries: dict[str, int] = field(default_factory=dict)


def _id_pattern(message_id: str) -> re.Pattern[bytes]:
    return re.compile(rb'"message_id"\s*:\s*"' + re.escape(message_id.encode()) + rb'"')


def _json(value: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def entry_matches(
    fields: dict[Any, Any], message_id: str, provider: str | None = None, account: str | None = None
) -> bool:
    """Whether a stream entry carries this message: a booking or a dead letter (its `message`
    envelope), a result (its `result`), or any field where the message_id appears in JSON form
    (an oversized entry's head, a message that is not valid JSON). A provider or account that
    the entry names and that differs from the one asked for is another booking."""
    needle = message_id.encode()
    pattern = _id_pattern(message_id)
    for name, value in fields.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        if needle not in raw:
            continue
        key = name if isinstance(name, bytes) else str(name).encode()
        data = _json(raw) if key in (b"message", b"result", b"orig_message") else None
        if data is not None:
            if data.get("message_id") != message_id:
                continue
            if provider and data.get("provider") not in (None, provider):
                continue
            if account and data.get("account", "default") != account:
                continue
            return True
        head = raw[:LOOK_BYTES]
        if pattern.search(head):
            named = _PROVIDER.search(head)
            if provider and named and named.group(1).decode(errors="replace") != provider:
                continue
            return True
    return False


def _scan(client: redis.Redis, stream: str, match: Any) -> list[str]:
    """Ids of the entries of `stream` for which match(fields) holds, a chunk at a time."""
    found: list[str] = []
    start = "-"
    while True:
        chunk = client.xrange(stream, min=start, max="+", count=SCAN_COUNT)
        if not chunk:
            return found
        for entry_id, fields in chunk:
            if fields and match(fields):
                found.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
        last = chunk[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _below(entry_id: str, floor: retention.StreamId | None) -> bool:
    return floor is not None and retention.parse_id(entry_id) < floor


def find(
    engine: Engine,
    client: redis.Redis,
    settings: Settings,
    message_id: str,
    provider: str | None = None,
    account: str | None = None,
) -> Plan:
    """Everything of the message, changing nothing."""
    rows = ledger.rows_for_message(engine, message_id, provider, account)
    plan = Plan(message_id, provider, account, rows)

    def match(fields: dict[Any, Any]) -> bool:
        return entry_matches(fields, message_id, provider, account)

    streams = [settings.dead_stream, settings.results_stream, *sorted({r.reply_to for r in rows})]
    for stream in dict.fromkeys(streams):
        hits = _scan(client, stream, match)
        if hits:
            plan.entries[stream] = hits
    bookings = _scan(client, settings.intake_stream, match)
    floor = retention.safe_floor(client, settings.intake_stream)
    done = [i for i in bookings if _below(i, floor)]
    plan.unprocessed = [i for i in bookings if not _below(i, floor)]
    if done:
        plan.entries[settings.intake_stream] = done
    return plan


def purge(engine: Engine, client: redis.Redis, plan: Plan, delete_rows: bool = False) -> Report:
    """Remove what `plan` found. Refuses (PurgeRefused, nothing changed) while the message is
    still being worked on."""
    if plan.active or plan.unprocessed:
        what = [f"{r.idempotency_key} is {r.status}" for r in plan.active]
        what += [f"bookings entry {i} is not processed yet" for i in plan.unprocessed]
        raise PurgeRefused(
            "the message is still being worked on (" + "; ".join(what) + "): nothing was removed; "
            "run purge again once it is final"
        )
    report = Report(rows_deleted=delete_rows)
    keys = [r.idempotency_key for r in plan.rows]
    gone = ledger.erase_rows(engine, keys, delete_rows)
    report.rows, report.outbox, report.attempts = gone["rows"], gone["outbox"], gone["attempts"]
    for stream, ids in plan.entries.items():
        removed = 0
        for i in range(0, len(ids), 500):
            removed += int(client.xdel(stream, *ids[i : i + 500]))
        report.entries[stream] = removed
    return report


def purge_message(
    engine: Engine,
    client: redis.Redis,
    settings: Settings,
    message_id: str,
    provider: str | None = None,
    account: str | None = None,
    delete_rows: bool = False,
) -> tuple[Plan, Report]:
    plan = find(engine, client, settings, message_id, provider, account)
    return plan, purge(engine, client, plan, delete_rows)


# --- the command -------------------------------------------------------------------------------


def describe_plan(plan: Plan) -> list[str]:
    who = plan.message_id + "".join(
        f" {k}={v}" for k, v in (("provider", plan.provider), ("account", plan.account)) if v
    )
    lines = [f"message {who}:"]
    if not plan.rows:
        lines.append("  sql: no row")
    for r in plan.rows:
        ref = f", provider reference {r.provider_reference}" if r.provider_reference else ""
        where_ = f"{r.provider}.{r.account} generation {r.generation}"
        lines.append(f"  sql: row {r.idempotency_key} {where_} {r.status}{ref}")
    for stream, ids in plan.entries.items():
        lines.append(f"  redis {stream}: {len(ids)} entr{'y' if len(ids) == 1 else 'ies'}")
    for i in plan.unprocessed:
        lines.append(f"  redis bookings entry {i}: not processed yet")
    return lines


def describe_report(plan: Plan, report: Report) -> list[str]:
    what = (
        "deleted"
        if report.rows_deleted
        else "erased (payload, tickets, qr_codes, metadata; kept as tombstone)"
    )
    lines = [
        f"removed: sql {report.rows} row(s) {what}, {report.outbox} webhook outbox entr"
        f"{'y' if report.outbox == 1 else 'ies'}, {report.attempts} attempt row(s)"
    ]
    lines += [
        f"removed: redis {stream} {n} entr{'y' if n == 1 else 'ies'}" for stream, n in report.entries.items()
    ]
    refs = sorted(
        {f"{r.provider}.{r.account} {r.provider_reference}" for r in plan.rows if r.provider_reference}
    )
    if refs:
        lines.append(
            "not ours to remove: the provider's copy; ask them to erase booking(s) " + ", ".join(refs)
        )
    return lines


def cmd_purge(args: argparse.Namespace) -> int:
    from worker.db import get_engine

    settings = get_settings()
    engine = get_engine()
    client = redis_clients.client("ops", settings)
    plan = find(engine, client, settings, args.message_id, args.provider, args.account)
    for line in describe_plan(plan):
        print(line)
    if not plan.rows and not plan.entries and not plan.unprocessed:
        print("nothing to remove")
        return errors.OK
    if not args.yes:
        if not sys.stdin.isatty():
            print("nothing removed: add --yes to remove the above")
            return errors.OK
        if input("remove all of the above? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return errors.OK
    try:
        report = purge(engine, client, plan, delete_rows=args.delete_rows)
    except PurgeRefused as exc:
        print(f"ticketrelay purge: {exc}", file=sys.stderr)
        return errors.FAILED
    for line in describe_report(plan, report):
        print(line)
    return errors.OK


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "purge",
        help="a deletion request: remove every copy of one message's personal data (docs/data-protection.md)",
    )
    p.add_argument("--message-id", required=True, help="the producer's message_id")
    p.add_argument("--provider", help="only this provider's rows and entries")
    p.add_argument("--account", help="only this account's rows and entries")
    p.add_argument(
        "--delete-rows",
        action="store_true",
        help="delete the rows instead of keeping them as tombstones without personal data "
        "(a resend of the message would then be issued again)",
    )
    p.add_argument("--yes", action="store_true", help="remove without asking (else: show, then ask)")
    p.set_defaults(fn=cmd_purge)
    return p
