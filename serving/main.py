"""Run the local model server in the foreground until SIGINT/SIGTERM: what `fraudctl serve` calls.

Logging, signal handling and the start-up line live here so that any front end (the CLI, an embedding
program) serves the same way. Imports only the serving package and fraud.features.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from fraud import features as F
from serving.config import ConfigError
from serving.server import ModelServer, ServerOptions

# How long a thread may hold Python's lock while another waits for it (CPython's default: 5 ms). A batch thread
# whose model call has finished waits for the event loop thread to let go; at 5 ms that wait was most of the p99
# latency under load (bench/serving_bench.py). 0.5 ms trades a little throughput for it.
SWITCH_INTERVAL_S = float(os.environ.get("FRAUD_SERVING_SWITCH_INTERVAL_S", "0.0005"))


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def serve(options: ServerOptions, *, echo=_echo, stop_event: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or `stop_event`). Returns the exit status: 0 clean stop, 1 could not start,
    2 bad configuration."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", F.TF_QUIET_LOG_LEVEL)  # TF's C++ start-up chatter is not our log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = ModelServer(options)
    try:
        server.start()
    except ConfigError as exc:
        echo(f"Error: {exc}", err=True)
        return ConfigError.exit_code
    except OSError as exc:
        echo(f"Error: {exc}", err=True)
        return 1
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    host = options.host
    echo(f"Serving {', '.join(server.core.model_names())}: REST http://{host}:{server.rest_port}/v1/models/"
         f"{options.model_name}  gRPC {host}:{server.grpc_port}  (Ctrl-C stops)")
    stop.wait()
    server.stop()
    return 0
