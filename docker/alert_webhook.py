"""A minimal Alertmanager webhook receiver for the container stack (service alert-webhook; standard library only).

    python /app/docker/alert_webhook.py [--host 0.0.0.0] [--port 9099] [--keep 1000]

POST /alerts   Alertmanager's webhook payload: each alert is logged (one JSON line on stdout) and kept in memory
GET  /alerts   the kept alerts, newest last, as JSON (tests and operators read what reached the receiver)
GET  /healthz  200
It stands in for a real receiver (paging, chat); Alertmanager's config (docker/alertmanager/alertmanager.yml)
names it.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(kept: collections.deque, lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/healthz":
                return self._send(200, {"status": "ok"})
            if self.path == "/alerts":
                with lock:
                    return self._send(200, list(kept))
            return self._send(404, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            if self.path != "/alerts":
                return self._send(404, {"error": "not found"})
            try:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            except ValueError:
                return self._send(400, {"error": "body is not JSON"})
            alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
            with lock:
                for alert in alerts:
                    kept.append(alert)
                    print(json.dumps({"status": alert.get("status"), "labels": alert.get("labels", {}),
                                      "startsAt": alert.get("startsAt")}), flush=True)
            return self._send(200, {"received": len(alerts)})

        def log_message(self, *args):  # requests are not news; alerts are printed above
            pass

    return Handler


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--keep", type=int, default=1000, help="alerts kept in memory for GET /alerts")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(collections.deque(maxlen=args.keep),
                                                                      threading.Lock()))
    print(f"alert-webhook: listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
