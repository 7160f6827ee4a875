// A minimal Redis client: RESP2 over one TCP socket, enough for XADD, XREAD and XRANGE.
// No npm package needed, so the example runs wherever Node.js 18+ runs.

import net from "node:net";

export function parseRedisUrl(url) {
  const u = new URL(url);
  if (u.protocol !== "redis:") throw new Error(`only redis:// URLs are supported, got ${u.protocol}`);
  return {
    host: u.hostname || "127.0.0.1",
    port: Number(u.port || 6379),
    db: Number((u.pathname || "/0").slice(1) || 0),
    username: decodeURIComponent(u.username || ""),
    password: decodeURIComponent(u.password || ""),
  };
}

function encode(args) {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) {
    const bytes = Buffer.from(String(arg), "utf8");
    parts.push(`$${bytes.length}\r\n`, bytes, "\r\n");
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, "utf8"))));
}

// Parses one reply at `pos`; returns [value, nextPos], or null when more bytes are needed.
function parse(buf, pos) {
  const eol = buf.indexOf("\r\n", pos);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString("utf8", pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case "+":
      return [line, next];
    case "-":
      return [new RedisError(line), next];
    case ":":
      return [Number(line), next];
    case "$": {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return null;
      return [buf.toString("utf8", next, next + len), next + len + 2];
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return [null, next];
      const items = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, at);
        if (item === null) return null;
        items.push(item[0]);
        at = item[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`);
  }
}

export class RedisError extends Error {}

export class Redis {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    socket.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      for (;;) {
        const got = this.waiting.length ? parse(this.buf, 0) : null;
        if (got === null) break;
        this.buf = this.buf.subarray(got[1]);
        const { resolve, reject } = this.waiting.shift();
        got[0] instanceof RedisError ? reject(got[0]) : resolve(got[0]);
      }
    });
    const fail = (err) => {
      for (const w of this.waiting.splice(0)) w.reject(err);
    };
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("connection to Redis closed")));
  }

  static async connect(url) {
    const cfg = parseRedisUrl(url);
    const socket = await new Promise((resolve, reject) => {
      const s = net.createConnection({ host: cfg.host, port: cfg.port }, () => resolve(s));
      s.once("error", reject);
    });
    const client = new Redis(socket);
    if (cfg.password) {
      await client.call(...(cfg.username ? ["AUTH", cfg.username, cfg.password] : ["AUTH", cfg.password]));
    }
    if (cfg.db) await client.call("SELECT", cfg.db);
    return client;
  }

  call(...args) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encode(args));
    });
  }

  close() {
    this.socket.end();
  }
}

// XRANGE/XREAD entries come as [id, [field, value, field, value, ...]].
export function fieldsOf(flat) {
  const out = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}
