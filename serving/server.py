"""The local TF-Serving-compatible model server: REST (threaded WSGI) + gRPC (thread pool) over one ServerCore,
with a poller thread that loads new versions and re-reads the model config.

It stands in for `tensorflow_model_server` where that binary cannot be installed (see docs/stack.md and
serving/README.md); production runs the real `tensorflow/serving` image with the files in this folder.
Start it with `fraudctl serve` (fraudctl/serve.py, which calls serving/main.py) or embed it:

    server = ModelServer(ServerOptions(model_base=Path(".../fraud_detector"), rest_port=0, grpc_port=0))
    server.start(); ...; server.stop()
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud import features as F
from serving.config import (ConfigError, ModelSettings, model_settings_from_proto, parse_model_server_config,
                            parse_monitoring_config, prometheus_path)
from serving.metrics import ServingMetrics

log = logging.getLogger("serving")

GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServerOptions(BaseModel):
    """Settings of one server, validated once (a misspelt option is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_base: Optional[Path] = None  # --model_base_path: <serving_dir>/<model>/ holding numeric versions
    model_name: str = F.MODEL_NAME  # --model_name
    model_config_file: Optional[Path] = None  # --model_config_file (its base_path is overridden by model_base)
    model_config_poll_seconds: float = Field(0.0, ge=0)  # --model_config_file_poll_wait_seconds (0: read once)
    monitoring_config_file: Optional[Path] = None  # --monitoring_config_file
    host: str = "127.0.0.1"  # TF Serving binds every interface; a developer machine should not by default
    rest_port: int = Field(8501, ge=0, le=65535)  # 0 picks a free port (tests)
    grpc_port: int = Field(8500, ge=0, le=65535)
    poll_seconds: float = Field(1.0, gt=0)  # --file_system_poll_wait_seconds
    enable_warmup: bool = True  # --enable_model_warmup
    enable_batching: bool = False  # --enable_batching
    batching_parameters_file: Optional[Path] = None  # --batching_parameters_file (TF Serving's defaults without)
    grpc_workers: int = Field(32, ge=1, le=1024)

    @model_validator(mode="after")
    def _needs_models(self):
        if self.model_base is None and self.model_config_file is None:
            raise ValueError("give a model base directory or a model config file")
        if self.batching_parameters_file is not None and not self.enable_batching:
            raise ValueError("a batching parameters file needs enable_batching (--enable-batching)")
        return self


def resolve_model_base(model_base: Path, model_name: str) -> Path:
    """Accept the serving dir too (`<dir>/<model>/<version>`), as `fraudctl score` does."""
    model_base = Path(model_base).expanduser().absolute()
    has_versions = model_base.is_dir() and any(p.name.isdigit() for p in model_base.iterdir())
    if not has_versions and (model_base / model_name).is_dir():
        return model_base / model_name
    return model_base


def model_settings(options: ServerOptions) -> list[ModelSettings]:
    if options.model_config_file is None:
        base = resolve_model_base(options.model_base, options.model_name)
        return [ModelSettings(options.model_name, str(base))]
    models = model_settings_from_proto(parse_model_server_config(options.model_config_file))
    if options.model_base is not None:  # run the production config against a local directory
        base = resolve_model_base(options.model_base, options.model_name)
        names = [m.name for m in models]
        if options.model_name not in names:
            raise ConfigError(f"{options.model_config_file}: no model named {options.model_name!r} to point at "
                              f"{base} (models: {names})")
        models = [ModelSettings(m.name, str(base), m.policy, m.labels) if m.name == options.model_name else m
                  for m in models]
    return models


def make_scheduler(options: ServerOptions, metrics: ServingMetrics):
    """The batch scheduler of --enable_batching, its parameters from --batching_parameters_file (TF Serving's
    defaults without one), observed by the batching metrics."""
    from serving.batching import BatchingOptions, BatchScheduler
    from serving.config import parse_batching_parameters
    from serving.metrics import BATCH_THREAD_POOL

    params = (BatchingOptions.from_proto(parse_batching_parameters(options.batching_parameters_file))
              if options.batching_parameters_file else BatchingOptions())

    def observe(stats) -> None:
        metrics.batching_wrapped_run_count.inc()
        metrics.batching_batch_size.observe(stats.batch_rows, model_name=stats.model_name)
        for queued in stats.queuing_us:
            metrics.batching_queuing_latency.observe(queued, thread_pool_name=BATCH_THREAD_POOL)

    log.info("Batching enabled: %s", params)
    return BatchScheduler(params, observe)


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = ServingMetrics()
        self.core = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self.prometheus_path: str | None = None
        self._grpc = None
        self._http = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.scheduler = None  # serving.batching.BatchScheduler with --enable_batching

    def start(self) -> "ModelServer":
        """Load what is on disk, then open the ports (as TF Serving does), then poll in the background."""
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        from werkzeug.serving import WSGIRequestHandler, make_server

        from serving.grpc_service import ModelService, PredictionService
        from serving.manager import ServerCore
        from serving.rest import RestApi

        options = self.options
        monitoring = (parse_monitoring_config(options.monitoring_config_file)
                      if options.monitoring_config_file else None)
        self.prometheus_path = prometheus_path(monitoring)
        models = model_settings(options)
        for m in models:
            log.info("Model %s: base path %s, version policy %s, labels %s", m.name, m.base_path,
                     m.policy.describe(), m.labels or "{}")
        if options.enable_batching:
            self.scheduler = make_scheduler(options, self.metrics)
        self.core = ServerCore(models, self.metrics, enable_warmup=options.enable_warmup, scheduler=self.scheduler)
        self.core.poll()

        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.grpc_workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.core, self.metrics), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), self._grpc)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{options.host}:{options.grpc_port}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {options.host}:{options.grpc_port}: {exc}") from exc
        if not self.grpc_port:
            raise OSError(f"cannot listen for gRPC on {options.host}:{options.grpc_port} (port in use?)")
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s:%d ...", options.host, self.grpc_port)

        class QuietHandler(WSGIRequestHandler):
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm holds the
            # second one back until the client's (delayed) ACK, adding milliseconds to every response.
            disable_nagle_algorithm = True

            def log_request(self, *args, **kwargs):  # one log line per request would drown the real news
                pass

        app = RestApi(self.core, self.metrics, self.prometheus_path)
        try:
            self._http = make_server(options.host, options.rest_port, app, threaded=True,
                                     request_handler=QuietHandler)
        except (OSError, SystemExit) as exc:  # werkzeug exits (SystemExit) when the port is taken
            self._grpc.stop(0)
            reason = "the address is in use" if isinstance(exc, SystemExit) else str(exc)
            raise OSError(f"cannot listen for HTTP on {options.host}:{options.rest_port}: {reason}") from None
        self._http.daemon_threads = True
        self.rest_port = self._http.server_port
        self._spawn("http", self._http.serve_forever)
        log.info("Exporting HTTP/REST API at:%s:%d ...", options.host, self.rest_port)
        if self.prometheus_path:
            log.info("Prometheus metrics at http://%s:%d%s", options.host, self.rest_port, self.prometheus_path)
        self._spawn("poller", self._poll_loop)
        return self

    def _spawn(self, name: str, target) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self) -> None:
        import time

        options = self.options
        next_config = (time.monotonic() + options.model_config_poll_seconds
                       if options.model_config_file and options.model_config_poll_seconds else None)
        while not self._stop.wait(options.poll_seconds):
            if next_config is not None and time.monotonic() >= next_config:
                next_config = time.monotonic() + options.model_config_poll_seconds
                try:
                    self.core.apply(model_settings(options))
                except ConfigError as exc:  # keep serving with the last good config
                    log.error("Ignoring the changed model config: %s", exc)
            self.core.poll()

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 1)
        for thread in self._threads:
            thread.join(timeout=grace + 1)
        if self.scheduler is not None:
            self.scheduler.stop()

    def wait(self) -> None:
        self._stop.wait()
