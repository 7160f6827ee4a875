"""Receive ticketrelay results by HTTP: verify the Standard Webhooks signature, then use them.

Standard library only. Run as a receiver (prints each verified result):

    WEBHOOK_SECRET=whsec_... python verify.py 8080

or import verify_webhook() into your own web framework: pass it the RAW request body (the
exact bytes received, before any JSON parsing) and the request headers.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 5 * 60


class InvalidWebhook(Exception):
    pass


def verify_webhook(secret, headers, body, now=None):
    """Raise InvalidWebhook unless `body` (bytes) was signed with `secret` ("whsec_...") and
    the signature's timestamp is within five minutes of now."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id = h.get("webhook-id")
    stamp = h.get("webhook-timestamp")
    signatures = h.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_S:
        raise InvalidWebhook("timestamp missing or more than 5 minutes away")
    key = base64.b64decode(secret[len("whsec_") :] if secret.startswith("whsec_") else secret)
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures, space-separated, while ticketrelay rotates its secret: any one will do.
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and value.isascii() and hmac.compare_digest(value, expected):
            return
    raise InvalidWebhook("no matching signature")


class Receiver(BaseHTTPRequestHandler):
    """Answers 204 to a verified delivery (ticketrelay then stops retrying it) and 400 to
    anything else. Set `secret` on a subclass, override handle_result()."""

    secret = ""
    seen = set()  # webhook ids already handled: a retry or a replay carries the same id

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            verify_webhook(self.secret, dict(self.headers.items()), body)
        except InvalidWebhook as exc:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(str(exc).encode())
            return
        webhook_id = self.headers["webhook-id"]
        if webhook_id not in self.seen:
            self.handle_result(webhook_id, json.loads(body))
            self.seen.add(webhook_id)
        self.send_response(204)
        self.end_headers()

    def handle_result(self, webhook_id, result):
        # Keep, per idempotency_key, the result with the highest revision.
        print(webhook_id, result["idempotency_key"], result["revision"], result["status"], flush=True)

    def log_message(self, format, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    handler = type("ConfiguredReceiver", (Receiver,), {"secret": os.environ["WEBHOOK_SECRET"], "seen": set()})
    ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


if __name__ == "__main__":
    main()
