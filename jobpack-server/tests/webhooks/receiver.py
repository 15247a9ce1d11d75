"""A webhook receiver for the tests, not written with jobpack's code: it checks each delivery's
signature with the Standard Webhooks project's own library (`standardwebhooks` from PyPI).

    receiver.py PORT SECRETS_FILE LOG_FILE

Listens on 127.0.0.1:PORT, prints "ready" once it does. For every POST it appends one JSON line
to LOG_FILE: the path, the three webhook-* headers, whether the signature verified against any
secret listed in SECRETS_FILE (one per line, read at each request), the body, the time. Paths
starting with /flaky answer 500 to their first two requests, then 200; all others 200.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

PORT, SECRETS, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
COUNTS = {}


def secrets():
    if not os.path.exists(SECRETS):
        return []
    with open(SECRETS) as f:
        return [line.strip() for line in f if line.strip()]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = False
        for s in secrets():
            try:
                Webhook(s).verify(body, headers)
                verified = True
                break
            except Exception:
                pass
        COUNTS[self.path] = COUNTS.get(self.path, 0) + 1
        code = 500 if self.path.startswith("/flaky") and COUNTS[self.path] <= 2 else 200
        record = {
            "path": self.path,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "verified": verified,
            "extra": headers.get("x-receiver-token"),
            "body": json.loads(body or b"null"),
            "time": time.time(),
            "answered": code,
        }
        with open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
