#!/usr/bin/env node
// A booking system in Node.js: publish one booking envelope to ticketrelay, compute its
// idempotency key, wait for its result on our own reply_to stream, print it.
// Exit 0 only when the result carries our key and the status is "issued" ("cancelled" with
// --cancel). See ../README.md.

import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { Redis, fieldsOf } from "./resp.mjs";

const BOOKINGS_STREAM = "ticketrelay:bookings";
const RESULTS_PREFIX = "ticketrelay:results";
// CONTRACT.md section 1: fixed forever.
const NAMESPACE = "6f1d7c52-3b0e-5a86-9d64-2c1f0e8a4b17";

function uuid5(namespace, name) {
  const ns = Buffer.from(namespace.replace(/-/g, ""), "hex");
  const hash = createHash("sha1").update(ns).update(Buffer.from(name, "utf8")).digest();
  const b = hash.subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50; // version 5
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = b.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function idempotencyKey(provider, account, messageId, generation = 0) {
  return uuid5(NAMESPACE, `${provider}/${account}/${messageId}/${generation}`);
}

function samplePayload(provider, messageId) {
  // The provider's own request body; here the sample shipped beside this directory.
  const file = new URL(`../${provider}.json`, import.meta.url);
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw new Error(`no sample payload for provider ${provider} (${file.pathname})`);
  }
  const payload = JSON.parse(text).payload;
  // RemyPass deduplicates on bookingId: it must be this booking's own id.
  if (provider === "remypass") payload.bookingId = `BK-${messageId}`;
  return payload;
}

function buildEnvelope(opts, messageId, replyTo) {
  const envelope = {
    version: 1,
    message_id: messageId,
    provider: opts.provider,
    account: opts.account,
    reply_to: replyTo,
    metadata: { example: "node" },
  };
  if (opts.cancel) {
    // CONTRACT.md 1.1: a cancel is a message of its own, naming the booking it cancels.
    envelope.operation = "cancel";
    envelope.cancels = opts.cancel;
  } else {
    envelope.payload = samplePayload(opts.provider, messageId);
  }
  return envelope;
}

async function waitForResult(redis, stream, messageId, timeoutS) {
  const deadline = Date.now() + timeoutS * 1000;
  let last = "0"; // our stream is new: read it from the start, so nothing is missed
  while (Date.now() < deadline) {
    const reply = await redis.call("XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", stream, last);
    for (const [, entries] of reply || []) {
      for (const [id, flat] of entries) {
        last = id;
        const text = fieldsOf(flat).result;
        const result = text ? JSON.parse(text) : null;
        if (result && result.message_id === messageId) return [text, result];
      }
    }
  }
  return [null, null];
}

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      "redis-url": { type: "string", default: process.env.REDIS_URL || "redis://127.0.0.1:6379/0" },
      provider: { type: "string", default: "eguma" },
      account: { type: "string", default: "default" },
      "message-id": { type: "string" },
      generation: { type: "string", default: "0" },
      "reply-to": { type: "string" },
      timeout: { type: "string", default: "60" },
      cancel: { type: "string" },
      "key-only": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  return values;
}

const USAGE = `usage: node booking.mjs [--redis-url URL] [--provider eguma] [--account default]
       [--message-id ID] [--reply-to STREAM] [--timeout 60] [--cancel MESSAGE_ID]
       [--key-only [--generation N]]
REDIS_URL (redis://host:port/db) is read from the environment when --redis-url is not given.`;

async function main() {
  let opts;
  try {
    opts = options(process.argv.slice(2));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  const messageId = opts["message-id"] || `node-${Date.now()}-${randomBytes(4).toString("hex")}`;
  if (opts["key-only"]) {
    console.log(idempotencyKey(opts.provider, opts.account, messageId, Number(opts.generation)));
    return 0;
  }
  const key = idempotencyKey(opts.provider, opts.account, messageId, 0);
  const replyTo = opts["reply-to"] || `${RESULTS_PREFIX}:node-${randomBytes(6).toString("hex")}`;
  const envelope = buildEnvelope(opts, messageId, replyTo);
  console.log(`message_id=${messageId}`);
  console.log(`idempotency_key=${key}`);
  console.log(`reply_to=${replyTo}`);

  const redis = await Redis.connect(opts["redis-url"]);
  try {
    const entryId = await redis.call("XADD", BOOKINGS_STREAM, "*", "message", JSON.stringify(envelope));
    console.log(`published=${entryId}`);
    const [text, result] = await waitForResult(redis, replyTo, messageId, Number(opts.timeout));
    if (result === null) {
      console.error(`no result on ${replyTo} within ${opts.timeout}s`);
      return 1;
    }
    console.log(`result=${text}`);
    const wanted = opts.cancel ? "cancelled" : "issued";
    if (result.idempotency_key !== key) {
      console.error(`the result's idempotency_key ${result.idempotency_key} is not ours (${key})`);
      return 1;
    }
    if (result.status !== wanted) {
      console.error(`status ${result.status}, not ${wanted}`);
      return 1;
    }
    console.log(`ok: ${result.status}, ${(result.tickets || []).length} ticket(s)`);
    return 0;
  } finally {
    redis.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  },
);
