"""Intake's reads of the bookings stream, bounded in bytes, with oversized entries kept in Redis.

A plain XREADGROUP COUNT 100 hands intake 100 entries whatever their size: 100 entries of 50 MB
are 5 GB in the intake process. Nothing in Redis tells an entry's size without reading it
(XINFO and XPENDING do not; MEMORY USAGE is per key), so the read runs inside Redis, in a Lua
script that takes one entry at a time (XREADGROUP / XAUTOCLAIM with COUNT 1), measures its
fields with string.len, and returns

- an entry within the limit, whole, until the entries returned add up to the byte budget
  (always at least one: an entry within the limit always fits);
- an entry over the limit as its sizes and the first bytes of its `message` only: its body
  never leaves Redis. It still counts against the budget, so one call copies at most about a
  budget's worth of oversized entries inside Redis (each is a Lua string for a moment), which
  bounds how long one call holds Redis too.

The script is atomic, so the entries it reads are delivered to this consumer exactly as by the
commands it calls; those it did not reach stay where they were (undelivered, or pending for
their consumer). Blocking is not possible inside a script: an idle intake polls instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import redis

from schemas.errors import clean_text
from worker.redaction import scrub

Mode = Literal["new", "own", "claim"]

# Bytes of an oversized entry's `message` returned to intake: where its message_id is looked
# for (as validation does on a message it read); the dead letter keeps at most 1 KB of them.
HEAD_BYTES = 65536
# At most this many XAUTOCLAIM steps per call: each scans a few pending entries.
MAX_CLAIM_STEPS = 1000

_SCRIPT = """
local stream = KEYS[1]
local group, consumer, mode = ARGV[1], ARGV[2], ARGV[3]
local count, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_message, max_entry = tonumber(ARGV[6]), tonumber(ARGV[7])
local head, min_idle, max_steps = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local out = {}
local seen, taken, steps = 0, 0, 0
local cursor = "0"
if mode == "claim" then cursor = "0-0" end
while taken < count and seen < budget and steps < max_steps do
  steps = steps + 1
  local id, fields = nil, nil
  local finished = false
  if mode == "claim" then
    local r = redis.call("XAUTOCLAIM", stream, group, consumer, min_idle, cursor, "COUNT", 1)
    cursor = r[1]
    if r[2][1] then id, fields = r[2][1][1], r[2][1][2] end
    if cursor == "0-0" then finished = true end
  else
    local from = ">"
    if mode == "own" then from = cursor end
    local r = redis.call("XREADGROUP", "GROUP", group, consumer, "COUNT", 1, "STREAMS", stream, from)
    if (not r) or (not r[1][2][1]) then break end
    id, fields = r[1][2][1][1], r[1][2][1][2]
    cursor = id
  end
  -- A pending entry deleted from the stream comes back without fields: nothing to do.
  if id and fields then
    local size, message = 0, nil
    for i = 1, #fields, 2 do
      size = size + #fields[i] + #fields[i + 1]
      if fields[i] == "message" then message = fields[i + 1] end
    end
    seen = seen + size
    taken = taken + 1
    if size > max_entry or (message and #message > max_message) then
      local sizes = {}
      for i = 1, #fields, 2 do
        sizes[#sizes + 1] = string.sub(fields[i], 1, 64)
        sizes[#sizes + 1] = #fields[i + 1]
      end
      local first = ""
      if message then first = string.sub(message, 1, head) end
      out[#out + 1] = {id, "big", size, sizes, first}
      fields, message = nil, nil
      -- Free the copy now rather than at Lua's leisure: it may be tens of megabytes.
      collectgarbage("collect")
    else
      out[#out + 1] = {id, "ok", fields}
    end
  end
  if finished then break end
end
return out
"""


@dataclass(frozen=True)
class Oversized:
    """What is known of an entry over the size limit without reading it."""

    size: int  # every field name and value, in bytes
    fields: tuple[tuple[bytes, int], ...]  # (name, first 64 bytes of it; value length)
    head: bytes  # the first HEAD_BYTES of its `message` field

    @property
    def message_bytes(self) -> int | None:
        return next((n for name, n in self.fields if name == b"message"), None)


Entry = tuple[str, dict[Any, Any] | Oversized]


@dataclass(frozen=True)
class Read:
    entries: list[Entry]
    seen_bytes: int  # the size of every entry the call looked at, oversized ones included


class BoundedReader:
    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        budget_bytes: int,
        max_message_bytes: int,
        max_entry_bytes: int,
    ) -> None:
        self.client = client
        self.keys = [stream]
        self.group = group
        self.consumer = consumer
        self.budget_bytes = budget_bytes
        self.max_message_bytes = max_message_bytes
        self.max_entry_bytes = max_entry_bytes
        self._script = client.register_script(_SCRIPT)

    def read(self, mode: Mode, count: int, budget_bytes: int | None = None, min_idle_ms: int = 0) -> Read:
        """Up to `count` entries: new ones (`new`, like XREADGROUP >), this consumer's pending
        ones (`own`, like XREADGROUP 0) or other consumers' idle ones (`claim`, XAUTOCLAIM)."""
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        if count <= 0 or budget <= 0:
            return Read([], 0)
        reply = self._script(
            keys=self.keys,
            args=[
                self.group,
                self.consumer,
                mode,
                count,
                budget,
                self.max_message_bytes,
                self.max_entry_bytes,
                HEAD_BYTES,
                min_idle_ms,
                MAX_CLAIM_STEPS,
            ],
        )
        entries: list[Entry] = []
        seen = 0
        for item in reply or []:
            entry_id = _text(item[0])
            if _text(item[1]) == "ok":
                flat = item[2]
                fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
                seen += sum(len(k) + len(v) for k, v in fields.items())
                entries.append((entry_id, fields))
            else:
                sizes = item[3]
                big = Oversized(
                    size=int(item[2]),
                    fields=tuple((_bytes(sizes[i]), int(sizes[i + 1])) for i in range(0, len(sizes), 2)),
                    head=_bytes(item[4]),
                )
                seen += big.size
                entries.append((entry_id, big))
        return Read(entries, seen)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


# --- the dead letter of an oversized entry ----------------------------------------------------

_MESSAGE_ID = re.compile(rb'"message_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')
_PAYLOAD_KEY = re.compile(rb'"payload"\s*:')
DEAD_HEAD_CHARS = 1024


def message_id_in(head: bytes) -> str | None:
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode() if found else None


def safe_head(head: bytes) -> str:
    """What the dead letter keeps of an oversized entry's first bytes: only what precedes its
    `payload` (the envelope's identity: message_id, provider, account, reply_to, metadata; the
    customer's data sits in the payload), scrubbed of email addresses, long digit runs, URLs
    and credentials, at most DEAD_HEAD_CHARS characters."""
    cut = _PAYLOAD_KEY.search(head)
    before = head[: cut.start()] if cut else head
    return scrub(before.decode("utf-8", errors="replace"), limit=DEAD_HEAD_CHARS)


def describe_fields(big: Oversized) -> str:
    """`name=length` for each field, names cleaned (they are the producer's bytes)."""
    return clean_text(
        " ".join(f"{n.decode('utf-8', errors='replace')}={size}" for n, size in big.fields), 300
    )
