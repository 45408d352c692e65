"""Model-status exporter: TF Serving's model status as Prometheus gauges, for the alert rules.

TF Serving exports request and load metrics but nothing about which versions are available, so "no model
available" and "model not updated for N days" cannot be alerted on from its own metrics. This sidecar asks
TF Serving's REST status API (GET /v1/models/<model>) every few seconds and serves, at /metrics:

    serving_model_version_available{model_name, model_version}  1 AVAILABLE, 0 loading or failed to load
    serving_model_latest_version{model_name}                    newest AVAILABLE version (= push time)

the same gauges `fraudctl serve` exposes itself (names in serving/metrics.py). When TF Serving cannot be
reached the gauges disappear, so `absent(...)` alerts fire. Standard library only:

    python -m serving.status_exporter --rest-url http://tf-serving:8501 --model fraud_detector --port 9102
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.metrics import CONTENT_TYPE, ServingMetrics

log = logging.getLogger("serving.status_exporter")
METRICS_PATH = "/metrics"


def fetch_states(rest_url: str, model: str, timeout: float) -> dict[int, bool]:
    """version -> available, from TF Serving's model status. Versions unloaded cleanly (END, OK) are left out;
    a failed load (END with an error) counts as known but not available."""
    with urllib.request.urlopen(f"{rest_url.rstrip('/')}/v1/models/{model}", timeout=timeout) as response:
        document = json.load(response)
    states = {}
    for item in document.get("model_version_status", []):
        state = item.get("state")
        failed = item.get("status", {}).get("error_code", "OK") != "OK"
        if state == "AVAILABLE":
            states[int(item["version"])] = True
        elif state in ("LOADING", "START") or failed:
            states[int(item["version"])] = False
    return states


class Exporter:
    def __init__(self, rest_url: str, models: list[str], interval: float, timeout: float):
        self.rest_url, self.models, self.interval, self.timeout = rest_url, models, interval, timeout
        self.metrics = ServingMetrics()
        self._stop = threading.Event()

    def refresh(self) -> None:
        for model in self.models:
            try:
                states = fetch_states(self.rest_url, model, self.timeout)
            except urllib.error.HTTPError as exc:
                states = {}  # 404: TF Serving knows no version of it
                log.warning("status of %s: HTTP %s", model, exc.code)
            except (OSError, ValueError) as exc:
                states = {}
                log.warning("status of %s: %s", model, exc)
            self.metrics.set_versions(model, states)

    def run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()

    def exposition(self) -> str:
        lines = []
        for metric in (self.metrics.model_version_available, self.metrics.model_latest_version):
            lines.extend(metric.exposition())
        return "\n".join(lines) + "\n"


def make_server(exporter: Exporter, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?", 1)[0] != METRICS_PATH:
                self.send_error(404)
                return
            body = exporter.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="TF Serving model status as Prometheus gauges")
    parser.add_argument("--rest-url", required=True, help="TF Serving REST base URL, e.g. http://tf-serving:8501")
    parser.add_argument("--model", action="append", required=True, help="model name (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (0.0.0.0 for every one, e.g. in a container)")
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between status calls")
    parser.add_argument("--timeout", type=float, default=2.0, help="timeout of each status call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exporter = Exporter(args.rest_url, args.model, args.interval, args.timeout)
    server = make_server(exporter, args.host, args.port)
    threading.Thread(target=exporter.run, daemon=True).start()
    log.info("exporting the status of %s from %s on :%d%s", args.model, args.rest_url, server.server_port,
             METRICS_PATH)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
