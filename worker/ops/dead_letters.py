"""`ticketrelay dead list|show|replay|purge`: look at the dead-letter stream, put an entry back
on the bookings stream (as it was, or corrected), and clear old entries.

Personal data: a dead entry holds the producer's message untouched, customer names and emails
included. `list` shows only our own fields (id, time, reason, stream, size); `show` shows the
reason, the envelope's identity (message_id, provider, account: checked against their
patterns) and the *shape* of the rest (field names and value types and lengths, never a
value), which is what an operator needs to see what was wrong: the reason names the field at
fault, the shape shows what was there instead. `show --raw` prints the fields as they are, for
a terminal only, with a warning on stderr.

Replays are recorded beside the stream (an entry cannot be changed): the hash
`<dead stream>:replays` maps an entry id to the list of its replays. A second replay of the
same entry is refused unless `--force`. Replay and record are one Lua script, so two
operators cannot both replay an entry once.

Exit codes: 0 done; 1 not found or refused (nothing changed); 2 usage; 3 Redis (or, for the
replay's check, the database) unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from schemas.keys import idempotency_key
from worker.settings import AccountConfig, AccountsError, Settings
from worker.validation import identifiers

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# The fields worker/results.py:dead_letter adds; an original field of such a name was kept
# under ORIG_PREFIX + name.
OWN_FIELDS = ("dead_reason", "dead_entry_id", "dead_stream", "dead_at")
ORIG_PREFIX = "orig_"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ENTRY_ID = re.compile(r"^\d+-\d+$")
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_SCAN_BATCH = 500

# Replay and its record in one step: refused (0) when the entry was replayed before and this
# is not forced; else XADD onto the bookings stream and append to the entry's replay list.
_REPLAY = """
local replays_key, target = KEYS[1], KEYS[2]
local entry_id, force, message, record = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4]
local before = redis.call('HGET', replays_key, entry_id)
if before and not force then return {0, before} end
local new_id = redis.call('XADD', target, '*', 'message', message, 'replay_of', entry_id)
local list = {}
if before then list = cjson.decode(before) end
local item = cjson.decode(record)
item['new_entry_id'] = new_id
table.insert(list, item)
local encoded = cjson.encode(list)
redis.call('HSET', replays_key, entry_id, encoded)
return {1, new_id}
"""


class DeadLetterError(Exception):
    """A one-line answer for the operator, with the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def replays_key(settings: Settings) -> str:
    return f"{settings.dead_stream}:replays"


@dataclass
class DeadEntry:
    id: str
    dead_at: str
    reason: str
    stream: str
    source_entry_id: str
    # The producer's fields, under their original names, untouched.
    original: dict[bytes, bytes]
    replays: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.original.items())

    @property
    def message(self) -> bytes | None:
        return self.original.get(b"message")

    def summary(self) -> dict[str, Any]:
        """What `list` shows: our own fields only, never the producer's."""
        return {
            "id": self.id,
            "dead_at": self.dead_at,
            "reason": self.reason,
            "stream": self.stream,
            "size": self.size,
            "replayed": len(self.replays),
        }


def _entry(entry_id: Any, fields: dict[Any, Any], replays: Any = None) -> DeadEntry:
    own: dict[str, str] = {}
    original: dict[bytes, bytes] = {}
    for key, value in fields.items():
        name = _bytes(key)
        text = name.decode(errors="replace")
        if text in OWN_FIELDS:
            own[text] = _text(value)
        elif name.startswith(ORIG_PREFIX.encode() + b"dead_"):
            original[name[len(ORIG_PREFIX) :]] = _bytes(value)
        else:
            original[name] = _bytes(value)
    history: list[dict[str, Any]] = []
    if replays is not None:
        with contextlib.suppress(ValueError, TypeError):
            loaded = json.loads(_text(replays))
            history = loaded if isinstance(loaded, list) else []
    return DeadEntry(
        id=_text(entry_id),
        dead_at=own.get("dead_at", ""),
        reason=own.get("dead_reason", ""),
        stream=own.get("dead_stream", ""),
        source_entry_id=own.get("dead_entry_id", ""),
        original=original,
        replays=history,
    )


# --- time -----------------------------------------------------------------------------------


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC when no zone is given) or a duration back from now: 30m, 24h, 7d, 2w."""
    current = now or datetime.now(UTC)
    m = _DURATION.match(value.strip())
    if m:
        return current - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(
            f"{value!r} is neither ISO 8601 nor a duration like 30m, 24h or 7d", EXIT_USAGE
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _min_id(when: datetime) -> str:
    return f"{int(when.timestamp() * 1000)}-0"


# --- the plain functions --------------------------------------------------------------------


def list_entries(
    client: redis.Redis,
    settings: Settings,
    since: datetime | None = None,
    reason_contains: str | None = None,
    limit: int | None = 50,
) -> list[DeadEntry]:
    """Newest first. Scans back in batches, so a filter over a long stream costs memory for
    one batch only."""
    needle = reason_contains.lower() if reason_contains else None
    low = _min_id(since) if since is not None else "-"
    found: list[DeadEntry] = []
    high = "+"
    while limit is None or len(found) < limit:
        batch = client.xrevrange(settings.dead_stream, max=high, min=low, count=_SCAN_BATCH)
        if not batch:
            break
        replays = _replays_of(client, settings, [_text(i) for i, _f in batch])
        for entry_id, fields in batch:
            entry = _entry(entry_id, fields or {}, replays.get(_text(entry_id)))
            if needle is None or needle in entry.reason.lower():
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        if len(batch) < _SCAN_BATCH:
            break
        high = "(" + _text(batch[-1][0])  # exclusive: the next batch starts below the last
    return found


def _replays_of(client: redis.Redis, settings: Settings, ids: list[str]) -> dict[str, Any]:
    if not ids:
        return {}
    values = client.hmget(replays_key(settings), ids)
    return {i: v for i, v in zip(ids, values, strict=True) if v is not None}


def get_entry(client: redis.Redis, settings: Settings, entry_id: str) -> DeadEntry:
    if not _ENTRY_ID.match(entry_id):
        raise DeadLetterError(f"{entry_id!r} is not a stream entry id (like 1733112000000-0)", EXIT_USAGE)
    found = client.xrange(settings.dead_stream, min=entry_id, max=entry_id)
    if not found:
        raise DeadLetterError(f"no dead letter {entry_id} in {settings.dead_stream}")
    entry_id_raw, fields = found[0]
    return _entry(entry_id_raw, fields or {}, client.hget(replays_key(settings), entry_id))


def shape(value: Any, depth: int = 0) -> Any:
    """The structure of a JSON value with every value replaced by its type (and length):
    `{"customer": {"email": "<string, 27 chars>"}}`. Keys that do not look like field names
    (they might be data themselves) are hidden too."""
    if depth > 8:
        return "<...>"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= 50:
                out["<...>"] = f"{len(value) - 50} more keys"
                break
            name = key if isinstance(key, str) and _KEY_NAME.match(key) else f"<key {i}>"
            out[name] = shape(item, depth + 1)
        return out
    if isinstance(value, list):
        items = [shape(item, depth + 1) for item in value[:3]]
        if len(value) > 3:
            items.append(f"<{len(value) - 3} more items>")
        return items
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return "<number>"
    if isinstance(value, str):
        return f"<string, {len(value)} chars>"
    return f"<{type(value).__name__}>"


def _identity(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope's fields that are identifiers, each shown only when it matches its pattern."""
    out: dict[str, Any] = dict(identifiers(envelope))
    version = envelope.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and -1000 < version < 1000:
        out["version"] = version
    return out


def describe_entry(entry: DeadEntry, raw: bool = False) -> dict[str, Any]:
    """What `show` prints. Without `raw`, no value of the producer's fields appears."""
    out: dict[str, Any] = {
        "id": entry.id,
        "dead_at": entry.dead_at,
        "reason": entry.reason,
        "stream": entry.stream,
        "source_entry_id": entry.source_entry_id,
        "size": entry.size,
        "replays": entry.replays,
    }
    if raw:
        out["fields"] = {_text(k): _text(v) for k, v in entry.original.items()}
        return out
    replay_of = entry.original.get(b"replay_of")
    if replay_of is not None and _ENTRY_ID.match(_text(replay_of)):
        out["replay_of"] = _text(replay_of)  # ours: this entry was itself a replay
    fields: dict[str, Any] = {}
    for key, value in entry.original.items():
        name = _text(key) if _KEY_NAME.match(_text(key)) else "<field>"
        fields[name] = {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()[:16]}
    out["fields"] = fields
    message = entry.message
    if message is None:
        out["message"] = "no `message` field"
        return out
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        out["message"] = f"not JSON ({len(message)} bytes)"
        return out
    if not isinstance(data, dict):
        out["message"] = f"JSON, but not an object: {shape(data)}"
        return out
    out["identity"] = _identity(data)
    out["shape"] = {k: v for k, v in shape(data).items() if k not in out["identity"]}
    return out


@dataclass(frozen=True)
class Replayed:
    entry_id: str
    new_entry_id: str
    stream: str
    corrected: bool
    message_id: str | None


def _envelope_of(message: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _key_of(envelope: dict[str, Any] | None) -> tuple[str, str] | None:
    """(message_id, idempotency key) of a generation-0 envelope, when they can be read."""
    if envelope is None:
        return None
    ident = _identity(envelope)
    if "message_id" not in ident or "provider" not in ident:
        return None
    account = ident.get("account", "default")
    return ident["message_id"], idempotency_key(ident["provider"], account, ident["message_id"], 0)


def _conflicting_row(engine: Engine, envelope: dict[str, Any] | None) -> str | None:
    """Why intake would dead-letter this envelope again as a reused message_id, or None: a row
    holds its key with a different payload (a `rejected` row always does: it keeps no payload)."""
    from worker import ledger
    from worker.validation import payload_hash

    found = _key_of(envelope)
    if found is None or envelope is None:
        return None
    message_id, key = found
    row = ledger.get(engine, key)
    if row is None:
        return None
    if row.payload_sha256 == payload_hash(envelope.get("payload")):
        return None  # the same booking: intake treats it as a resend, which is harmless
    return (
        f"message_id {message_id!r} already has a {row.status} booking with a different payload; "
        "the contract refuses a reused message_id, so intake would dead-letter it again: replay a "
        "corrected copy with a new message_id (--corrected FILE)"
    )


def replay(
    client: redis.Redis,
    settings: Settings,
    entry_id: str,
    *,
    engine: Engine | None = None,
    accounts: dict[tuple[str, str], AccountConfig] | None = None,
    corrected: bytes | None = None,
    force: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Replayed:
    """Put the entry's untouched `message` back on the bookings stream, or `corrected` (a new
    envelope, whose message_id must differ from the original's). Refused, changing nothing,
    when intake would only dead-letter it again and we can tell (a reused message_id; a
    corrected copy that does not validate), or when it was replayed before (unless `force`)."""
    entry = get_entry(client, settings, entry_id)
    if entry.replays and not force:
        last = entry.replays[-1]
        raise DeadLetterError(
            f"dead letter {entry_id} was already replayed at {last.get('at', '?')} (as "
            f"{last.get('new_entry_id', '?')}); use --force to replay it again"
        )
    original = _envelope_of(entry.message) if entry.message is not None else None
    if corrected is None:
        if entry.message is None:
            raise DeadLetterError(
                f"dead letter {entry_id} has no `message` field to replay; replay a corrected copy "
                "(--corrected FILE)"
            )
        message = entry.message
        envelope = original
    else:
        envelope = _envelope_of(corrected)
        if envelope is None:
            raise DeadLetterError("the corrected copy is not a JSON object (one envelope per file)")
        new_id = envelope.get("message_id")
        old = _key_of(original)
        if old is not None and new_id == old[0]:
            raise DeadLetterError(
                f"the corrected copy keeps message_id {old[0]!r}; give it a new message_id (the "
                "contract refuses a reused message_id with a different payload)"
            )
        if accounts is not None:
            from worker.validation import Rejected, validate_entry

            verdict = validate_entry({b"message": corrected}, settings, accounts)
            if isinstance(verdict, Rejected):
                raise DeadLetterError(
                    f"the corrected copy is invalid too ({verdict.error_type}: {verdict.reason})"
                )
        message = corrected
    if engine is not None and not force:
        try:
            why = _conflicting_row(engine, envelope)
        except SQLAlchemyError as exc:
            raise DeadLetterError(
                f"the database did not answer ({type(exc).__name__}); nothing was replayed",
                EXIT_UNREACHABLE,
            ) from None
        if why is not None:
            raise DeadLetterError(why)
    found = _key_of(envelope)
    message_id = found[0] if found else None
    record = {
        "at": now().isoformat(timespec="seconds"),
        "stream": settings.intake_stream,
        "corrected": corrected is not None,
        "message_id": message_id,
    }
    script: Any = client.register_script(_REPLAY)
    done, value = script(
        keys=[replays_key(settings), settings.intake_stream],
        args=[entry.id, "1" if force else "0", message, json.dumps(record)],
    )
    if not done:  # another operator replayed it between our read and now
        raise DeadLetterError(f"dead letter {entry_id} was already replayed; use --force to replay it again")
    return Replayed(entry.id, _text(value), settings.intake_stream, corrected is not None, message_id)


def purge(
    client: redis.Redis,
    settings: Settings,
    ids: list[str] | None = None,
    older_than: datetime | None = None,
) -> int:
    """Delete the given entries, or every entry older than `older_than`; their replay records
    go with them. Returns how many entries went."""
    if not ids and older_than is None:
        raise DeadLetterError("purge needs entry ids or --older-than", EXIT_USAGE)
    if ids and older_than is not None:
        raise DeadLetterError("purge takes entry ids or --older-than, not both", EXIT_USAGE)
    key = replays_key(settings)
    if ids:
        for entry_id in ids:
            if not _ENTRY_ID.match(entry_id):
                raise DeadLetterError(f"{entry_id!r} is not a stream entry id", EXIT_USAGE)
        removed = int(client.xdel(settings.dead_stream, *ids))
        if removed == 0:
            raise DeadLetterError(f"none of {', '.join(ids)} is in {settings.dead_stream}")
        client.hdel(key, *ids)
        return removed
    assert older_than is not None
    cutoff = _min_id(older_than)
    # Exact, not `~`: "older than 7 days" means all of them (they hold personal data).
    removed = int(client.xtrim(settings.dead_stream, minid=cutoff, approximate=False))
    # Replay records of entries no longer in the stream (purged now, or trimmed by the cap).
    names = [_text(n) for n in client.hkeys(key)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xrange(settings.dead_stream, min=name, max=name)
    stale = [name for name, found in zip(names, pipe.execute(), strict=True) if not found]
    if stale:
        client.hdel(key, *stale)
    return removed


# --- the command line ---------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `dead` on the `ticketrelay` command's subparsers (worker/ops/cli.py)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "dead",
        help="dead letters: list, show, replay, purge",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: 0 done, 1 not found or refused, 2 usage, 3 Redis or database unreachable",
    )
    sub = p.add_subparsers(dest="dead_command", required=True)

    sp = sub.add_parser("list", help="entries, newest first: id, time, reason, stream, size")
    sp.add_argument("--since", help="only entries since: ISO 8601 or a duration back from now (24h, 7d)")
    sp.add_argument("--reason-contains", metavar="TEXT", help="only entries whose reason contains TEXT")
    sp.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    sp.add_argument("--json", action="store_true", help="one JSON array")
    sp.set_defaults(fn=cmd_dead, dead_fn=_cmd_list)

    sp = sub.add_parser("show", help="one entry: reason, identity, and the shape of its fields")
    sp.add_argument("id")
    sp.add_argument(
        "--raw",
        action="store_true",
        help="print the producer's fields as they are: PERSONAL DATA, for a terminal, never a log",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_dead, dead_fn=_cmd_show)

    sp = sub.add_parser("replay", help="put an entry back on the bookings stream, as it was or corrected")
    sp.add_argument("id")
    sp.add_argument(
        "--corrected",
        metavar="FILE",
        help="replay this envelope (JSON, - for stdin) instead; its message_id must be new",
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="replay even if it was replayed before or its message_id is already taken",
    )
    sp.set_defaults(fn=cmd_dead, dead_fn=_cmd_replay)

    sp = sub.add_parser("purge", help="delete entries by id, or all older than a time")
    sp.add_argument("ids", nargs="*", metavar="ID")
    sp.add_argument("--older-than", metavar="WHEN", help="a duration (7d) or ISO 8601 time")
    sp.set_defaults(fn=cmd_dead, dead_fn=_cmd_purge)
    return p


@dataclass
class Stores:
    """What the commands use; built from the settings, or given by a test."""

    settings: Settings
    client: redis.Redis
    engine_factory: Callable[[], Engine] | None = None
    accounts_factory: Callable[[], dict[tuple[str, str], AccountConfig]] | None = None


def _default_stores() -> Stores:
    from worker.db import engine_for
    from worker.redis_clients import client as redis_client
    from worker.settings import get_accounts, get_settings

    settings = get_settings()
    client = redis_client("ops", settings)
    return Stores(
        settings,
        client,
        engine_factory=lambda: engine_for(settings.database_url),
        accounts_factory=lambda: get_accounts(settings),
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _cmd_list(args: argparse.Namespace, stores: Stores) -> int:
    since = parse_when(args.since) if args.since else None
    if args.limit < 0:
        raise DeadLetterError("--limit must be 0 (all) or more", EXIT_USAGE)
    entries = list_entries(stores.client, stores.settings, since, args.reason_contains, args.limit or None)
    rows = [e.summary() for e in entries]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print(
            f"no dead letters in {stores.settings.dead_stream}"
            + (" matching" if since or args.reason_contains else "")
        )
        return EXIT_OK
    print(f"{'ID':<17} {'DEAD AT':<20} {'STREAM':<22} {'SIZE':>7} {'REPLAYED':>8}  REASON")
    for r in rows:
        reason = r["reason"] if len(r["reason"]) <= 90 else r["reason"][:89] + "…"
        when, stream = _short_time(r["dead_at"]), r["stream"]
        print(f"{r['id']:<17} {when:<20} {stream:<22} {r['size']:>7} {r['replayed']:>8}  {reason}")
    return EXIT_OK


def _short_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return iso[:20]


def _cmd_show(args: argparse.Namespace, stores: Stores) -> int:
    entry = get_entry(stores.client, stores.settings, args.id)
    data = describe_entry(entry, raw=args.raw)
    if args.raw:
        print(
            "ticketrelay dead show --raw: the fields below are the producer's message as sent, "
            "personal data included; do not paste them into tickets, chats or logs",
            file=sys.stderr,
        )
    if args.json:
        _print_json(data)
        return EXIT_OK
    for name in ("id", "dead_at", "reason", "stream", "source_entry_id", "size", "replay_of"):
        if name in data:
            print(f"{name:<16} {data[name]}")
    for item in data["replays"]:
        print(
            f"{'replayed':<16} {item.get('at')} as {item.get('new_entry_id')} on {item.get('stream')}"
            + (" (corrected)" if item.get("corrected") else "")
        )
    if "identity" in data:
        print("identity        " + json.dumps(data["identity"], ensure_ascii=False))
    if "message" in data:
        print(f"{'message':<16} {data['message']}")
    print(
        "fields          "
        + json.dumps(data["fields"], indent=2, ensure_ascii=False).replace("\n", "\n" + " " * 16)
    )
    if "shape" in data:
        print(
            "shape           "
            + json.dumps(data["shape"], indent=2, ensure_ascii=False).replace("\n", "\n" + " " * 16)
        )
    return EXIT_OK


def _read_corrected(path: str) -> bytes:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise DeadLetterError(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}", EXIT_USAGE
        ) from None
    return data.strip()


def _cmd_replay(args: argparse.Namespace, stores: Stores) -> int:
    corrected = _read_corrected(args.corrected) if args.corrected else None
    engine = stores.engine_factory() if stores.engine_factory else None
    accounts = stores.accounts_factory() if stores.accounts_factory and corrected is not None else None
    done = replay(
        stores.client,
        stores.settings,
        args.id,
        engine=engine,
        accounts=accounts,
        corrected=corrected,
        force=args.force,
    )
    what = "a corrected copy of" if done.corrected else "the original message of"
    mid = f" (message_id {done.message_id})" if done.message_id else ""
    print(f"replayed {what} dead letter {done.entry_id} onto {done.stream} as {done.new_entry_id}{mid}")
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace, stores: Stores) -> int:
    older = parse_when(args.older_than) if args.older_than else None
    n = purge(stores.client, stores.settings, args.ids or None, older)
    print(f"purged {n} dead letter(s) from {stores.settings.dead_stream}")
    return EXIT_OK


def _where(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"  # never the URL: it may hold a password


def cmd_dead(args: argparse.Namespace, stores: Stores | None = None) -> int:
    """The `fn` of every `dead` subcommand: one-line errors on stderr, documented exit codes."""
    try:
        stores = stores or _default_stores()
    except Exception as exc:  # settings or the accounts file: a usage problem
        print(f"ticketrelay dead: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.dead_fn(args, stores)
        return code
    except DeadLetterError as exc:
        print(f"ticketrelay dead: {exc}", file=sys.stderr)
        return exc.code
    except AccountsError as exc:  # read for a corrected copy's validation
        print(f"ticketrelay dead: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(
            f"ticketrelay dead: Redis unreachable at {_where(stores.client)} ({type(exc).__name__})",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketrelay")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None, stores: Stores | None = None) -> int:
    """`python -m worker.ops.dead_letters list` works too (before cli.py registers `dead`)."""
    args = build_parser().parse_args(["dead", *(sys.argv[1:] if argv is None else argv)])
    return cmd_dead(args, stores)


if __name__ == "__main__":
    raise SystemExit(main())
