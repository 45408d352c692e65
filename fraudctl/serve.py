"""`fraudctl serve`: the local TF-Serving-compatible server (serving.main) on a model base directory.

Defaults come from serving.server.ServerOptions, where they are defined once (pydantic only; TensorFlow and
gRPC are imported when the server starts, so `fraudctl --help` stays fast).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fraud import features as F
from fraudctl.options import build, default_of
from serving.server import ServerOptions


def _default(field: str):
    return default_of(ServerOptions, field)


@click.command("serve")
@click.option("--model-base", type=click.Path(path_type=Path, file_okay=False),
              help=f"Model base directory with numeric version folders (<serving-dir>/{F.MODEL_NAME}); the "
                   "serving dir itself is accepted too. Overrides the base_path of the model in "
                   "--model-config-file.")
@click.option("--rest-port", default=_default("rest_port"), show_default=True, type=click.IntRange(0, 65535),
              help="HTTP/REST port (0: any free port).")
@click.option("--grpc-port", default=_default("grpc_port"), show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (0: any free port).")
@click.option("--model-config-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving model config (text proto): version policy and labels, e.g. serving/models.config.")
@click.option("--model-config-poll-seconds", default=_default("model_config_poll_seconds"), show_default=True,
              type=click.FloatRange(0),
              help="Re-read --model-config-file this often (0: never), like --model_config_file_poll_wait_seconds.")
@click.option("--monitoring-config-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving monitoring config enabling the Prometheus endpoint, e.g. serving/monitoring.config.")
@click.option("--poll-seconds", default=_default("poll_seconds"), show_default=True, type=click.FloatRange(min=0.01),
              help="How often to look for new versions (--file_system_poll_wait_seconds).")
@click.option("--host", default=_default("host"), show_default=True,
              help="Interface to listen on (0.0.0.0 for every interface, as the TF Serving image does).")
@click.option("--no-warmup", is_flag=True, help="Do not replay assets.extra/tf_serving_warmup_requests.")
@click.option("--enable-batching", is_flag=True,
              help="Merge concurrent requests into one model call, as --enable_batching (serving/batching.py).")
@click.option("--batching-parameters-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving BatchingParameters (text proto), e.g. serving/batching.config; needs "
                   "--enable-batching (TF Serving's defaults without it).")
@click.option("--tensorflow-intra-op-parallelism", default=_default("tensorflow_intra_op_parallelism"),
              show_default=True, type=click.IntRange(0),
              help="Threads one TensorFlow op may use (0: TensorFlow's default, the cores), as TF Serving's flag.")
@click.option("--tensorflow-inter-op-parallelism", default=_default("tensorflow_inter_op_parallelism"),
              show_default=True, type=click.IntRange(0),
              help="Threads running independent TensorFlow ops (0: TensorFlow's default), as TF Serving's flag.")
@click.option("--enable-reload-config", is_flag=True,
              help="Accept gRPC HandleReloadConfigRequest (TF Serving always does). It takes no credentials, so it "
                   "is off by default; base paths must then be inside --model-root.")
@click.option("--model-root", type=click.Path(path_type=Path, file_okay=False),
              help="With --enable-reload-config: the only folder reloaded base paths may be in (default: the "
                   "folders holding the configured base paths).")
@click.option("--ssl-config-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TF Serving SSLConfig (text proto: server_key, server_cert, custom_ca, client_verify): TLS on "
                   "the gRPC port, mutual with client_verify. REST stays plain, as in TF Serving.")
@click.option("--rest-max-connections", default=_default("rest_max_connections"), show_default=True,
              type=click.IntRange(1), help="Open REST connections at most; more are answered 503 and closed.")
@click.option("--rest-idle-timeout-seconds", default=_default("rest_idle_timeout_seconds"), show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Close a REST connection that sends no complete request for this long.")
def serve(model_base, rest_port, grpc_port, model_config_file, model_config_poll_seconds, monitoring_config_file,
          poll_seconds, host, no_warmup, enable_batching, batching_parameters_file, tensorflow_intra_op_parallelism,
          tensorflow_inter_op_parallelism, enable_reload_config, model_root, ssl_config_file, rest_max_connections,
          rest_idle_timeout_seconds):
    """Serve the model over TF Serving's REST and gRPC APIs, loading new versions as they are pushed."""
    if model_base is None and model_config_file is None:
        raise click.UsageError("give --model-base or --model-config-file")
    options = build(ServerOptions, dict(
        model_base=model_base, rest_port=rest_port, grpc_port=grpc_port, model_config_file=model_config_file,
        monitoring_config_file=monitoring_config_file, poll_seconds=poll_seconds,
        model_config_poll_seconds=model_config_poll_seconds, host=host, enable_warmup=not no_warmup,
        enable_batching=enable_batching, batching_parameters_file=batching_parameters_file,
        tensorflow_intra_op_parallelism=tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=tensorflow_inter_op_parallelism, enable_reload_config=enable_reload_config,
        model_root=model_root, ssl_config_file=ssl_config_file, rest_max_connections=rest_max_connections,
        rest_idle_timeout_seconds=rest_idle_timeout_seconds))
    from serving.main import serve as run_server

    sys.exit(run_server(options, echo=click.echo))


@click.command("serve-config")
@click.option("--model-base", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help=f"The pushed versions to choose from: the pipeline's --serving-dir/{F.MODEL_NAME}.")
@click.option("--base-path", default=None,
              help="base_path written into the config, where the server sees --model-base (e.g. "
                   f"/models/{F.MODEL_NAME} inside the tensorflow/serving container). [default: --model-base]")
@click.option("--canary", type=int, default=None, help="Version labelled canary. [default: the newest pushed]")
@click.option("--stable", type=int, default=None,
              help="Version labelled stable. [default: the pushed version before the canary]")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the config here (atomically: a server polling it never reads half a file). "
                   "[default: standard output]")
def serve_config(model_base, base_path, canary, stable, out):
    """Write a TF Serving model config (text ModelServerConfig) that serves two pushed versions by label:
    `stable` and `canary` (specific version policy). Give it to `fraudctl serve --model-config-file` or to
    tensorflow_model_server's --model_config_file; re-run it with new versions to release."""
    from fraud import atomic
    from fraud.errors import SettingsError
    from fraudctl.options import fail
    from serving.config import CANARY_LABEL, STABLE_LABEL, model_config_text, pinned_model_config
    from serving.manager import scan_versions

    try:
        config = pinned_model_config(F.MODEL_NAME, base_path or str(model_base.resolve()),
                                     list(scan_versions(str(model_base))), stable=stable, canary=canary)
    except SettingsError as exc:
        fail(exc)
    text = model_config_text(config)
    if out is None:
        click.echo(text, nl=False)
        return
    with atomic.atomic_path(out) as tmp:
        Path(tmp).write_text(text)
    labels = config.model_config_list.config[0].version_labels
    click.echo(f"{out}: {STABLE_LABEL} {labels[STABLE_LABEL]}, {CANARY_LABEL} {labels[CANARY_LABEL]}", err=True)
