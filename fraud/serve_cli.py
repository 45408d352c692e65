"""`fraudctl serve`: the local TF-Serving-compatible server (serving/server.py) on a model base directory.

`serve_main()` is the function; `serve_command` is its click command, added to `fraudctl` by fraud/cli.py.
`python -m fraud.serve_cli ...` runs the same command (the tests and the benchmark start it that way).
Nothing heavy is imported at module level: `fraudctl --help` stays fast.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from fraud import features as F


def serve_main(model_base: Path | None, rest_port: int = 8501, grpc_port: int = 8500,
               model_config_file: Path | None = None, monitoring_config_file: Path | None = None, *,
               poll_seconds: float = 1.0, model_config_poll_seconds: float = 0.0, host: str = "127.0.0.1",
               enable_warmup: bool = True, echo=click.echo, stop_event: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or `stop_event`). Returns the exit status: 0 clean stop, 1 could not start,
    2 bad settings."""
    from pydantic import ValidationError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter is not our log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from serving.config import ConfigError
    from serving.server import ModelServer, ServerOptions

    try:
        options = ServerOptions(model_base=model_base, rest_port=rest_port, grpc_port=grpc_port,
                                model_config_file=model_config_file, monitoring_config_file=monitoring_config_file,
                                poll_seconds=poll_seconds, model_config_poll_seconds=model_config_poll_seconds,
                                host=host, enable_warmup=enable_warmup)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            echo(f"Error: {where.replace('_', '-')}: {err['msg']}", err=True)
        return 2
    server = ModelServer(options)
    try:
        server.start()
    except ConfigError as exc:
        echo(f"Error: {exc}", err=True)
        return 2
    except OSError as exc:
        echo(f"Error: {exc}", err=True)
        return 1
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    echo(f"Serving {', '.join(server.core.model_names())}: REST http://{host}:{server.rest_port}/v1/models/"
         f"{options.model_name}  gRPC {host}:{server.grpc_port}  (Ctrl-C stops)")
    stop.wait()
    server.stop()
    return 0


@click.command("serve")
@click.option("--model-base", type=click.Path(path_type=Path, file_okay=False),
              help=f"Model base directory with numeric version folders (<serving-dir>/{F.MODEL_NAME}); the "
                   "serving dir itself is accepted too. Overrides the base_path of the model in "
                   "--model-config-file.")
@click.option("--rest-port", default=8501, show_default=True, type=click.IntRange(0, 65535),
              help="HTTP/REST port (0: any free port).")
@click.option("--grpc-port", default=8500, show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (0: any free port).")
@click.option("--model-config-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving model config (text proto): version policy and labels, e.g. serving/models.config.")
@click.option("--model-config-poll-seconds", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Re-read --model-config-file this often (0: never), like "
                   "--model_config_file_poll_wait_seconds.")
@click.option("--monitoring-config-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving monitoring config enabling the Prometheus endpoint, e.g. serving/monitoring.config.")
@click.option("--poll-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="How often to look for new versions (--file_system_poll_wait_seconds).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 for every interface, as the TF Serving image does).")
@click.option("--no-warmup", is_flag=True, help="Do not replay assets.extra/tf_serving_warmup_requests.")
def serve_command(model_base, rest_port, grpc_port, model_config_file, model_config_poll_seconds,
                  monitoring_config_file, poll_seconds, host, no_warmup):
    """Serve the model over TF Serving's REST and gRPC APIs, loading new versions as they are pushed."""
    if model_base is None and model_config_file is None:
        raise click.UsageError("give --model-base or --model-config-file")
    sys.exit(serve_main(model_base, rest_port, grpc_port, model_config_file, monitoring_config_file,
                        poll_seconds=poll_seconds, model_config_poll_seconds=model_config_poll_seconds, host=host,
                        enable_warmup=not no_warmup))


if __name__ == "__main__":
    serve_command()
