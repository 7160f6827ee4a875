// Receive ticketrelay results by HTTP: verify the Standard Webhooks signature, then use them.
// Node.js standard library only (crypto, http). Run as a receiver (prints each verified result):
//
//     WEBHOOK_SECRET=whsec_... PORT=8080 node verify.js
//
// or require verifyWebhook() in your own server: pass it the RAW body (a Buffer of the exact
// bytes received, before any JSON parsing) and the request headers (lower-case names).
"use strict";
const crypto = require("node:crypto");
const http = require("node:http");

const TOLERANCE_S = 5 * 60;

function verifyWebhook(secret, headers, body, nowSeconds = Date.now() / 1000) {
  const id = headers["webhook-id"];
  const stamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !stamp || !signatures) {
    throw new Error("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^[0-9]+$/.test(stamp) || Math.abs(nowSeconds - Number(stamp)) > TOLERANCE_S) {
    throw new Error("timestamp missing or more than 5 minutes away");
  }
  const key = Buffer.from(secret.startsWith("whsec_") ? secret.slice(6) : secret, "base64");
  const expected = crypto.createHmac("sha256", key).update(`${id}.${stamp}.`).update(body).digest();
  // Several signatures, space-separated, while ticketrelay rotates its secret: any one will do.
  for (const entry of signatures.split(" ")) {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    const given = Buffer.from(entry.slice(comma + 1), "base64");
    if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) return;
  }
  throw new Error("no matching signature");
}

module.exports = { verifyWebhook };

if (require.main === module) {
  const secret = process.env.WEBHOOK_SECRET;
  const seen = new Set(); // webhook ids already handled: a retry or a replay carries the same id
  http
    .createServer((req, res) => {
      const chunks = [];
      req.on("data", (chunk) => chunks.push(chunk));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        try {
          verifyWebhook(secret, req.headers, body);
        } catch (err) {
          res.writeHead(400).end(err.message);
          return;
        }
        const id = req.headers["webhook-id"];
        if (!seen.has(id)) {
          seen.add(id);
          const result = JSON.parse(body.toString("utf8"));
          // Keep, per idempotency_key, the result with the highest revision.
          console.log(id, result.idempotency_key, result.revision, result.status);
        }
        res.writeHead(204).end(); // ticketrelay stops retrying on any 2xx
      });
    })
    .listen(Number(process.env.PORT || 8080), "127.0.0.1");
}
