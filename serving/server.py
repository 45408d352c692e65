"""The local TF-Serving-compatible model server: REST (aiohttp) + gRPC (grpc.aio) on one event loop thread over one
ServerCore (serving/frontend.py says why), with a poller thread that loads new versions and re-reads the model
config.

It stands in for `tensorflow_model_server` where that binary cannot be installed (see docs/stack.md and
serving/README.md); production runs the real `tensorflow/serving` image with the files in this folder.
Start it with `fraudctl serve` (fraudctl/serve.py, which calls serving/main.py) or embed it:

    server = ModelServer(ServerOptions(model_base=Path(".../fraud_detector"), rest_port=0, grpc_port=0))
    server.start(); ...; server.stop()
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud import features as F
from serving.config import (ConfigError, ModelSettings, model_settings_from_proto, parse_model_server_config,
                            parse_monitoring_config, parse_ssl_config, prometheus_path)
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
    # --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism (0: TensorFlow picks, the cores)
    tensorflow_intra_op_parallelism: int = Field(0, ge=0)
    tensorflow_inter_op_parallelism: int = Field(0, ge=0)
    # Threads for what leaves the event loop: model calls without batching, status and config reloads.
    request_threads: int = Field(8, ge=1, le=1024)
    # gRPC HandleReloadConfigRequest takes no credentials: off unless asked for (TF Serving always accepts it),
    # and then only for base paths inside model_root (default: the folders holding the configured base paths).
    enable_reload_config: bool = False
    model_root: Optional[Path] = None
    ssl_config_file: Optional[Path] = None  # --ssl_config_file: TLS (optionally mutual) on the gRPC port
    # REST connections: at most this many open at once (more: 503 and closed), and one that sends no complete
    # request for this long is closed (a silent or slow-sending client cannot hold it; aiohttp's default is 1 h).
    rest_max_connections: int = Field(1024, ge=1)
    rest_idle_timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _needs_models(self):
        if self.model_base is None and self.model_config_file is None:
            raise ValueError("give a model base directory or a model config file")
        if self.batching_parameters_file is not None and not self.enable_batching:
            raise ValueError("a batching parameters file needs enable_batching (--enable-batching)")
        if self.model_root is not None and not self.enable_reload_config:
            raise ValueError("a model root only confines reloads: it needs enable_reload_config "
                             "(--enable-reload-config)")
        return self


def resolve_model_base(model_base: Path, model_name: str) -> Path:
    """Accept the serving dir too (`<dir>/<model>/<version>`), as `fraudctl score` does."""
    model_base = Path(model_base).expanduser().absolute()
    has_versions = model_base.is_dir() and any(p.name.isdigit() for p in model_base.iterdir())
    if not has_versions and (model_base / model_name).is_dir():
        return model_base / model_name
    return model_base


def is_url(path: str) -> bool:
    """A base path on a remote file system (gs://, s3://): not checked or confined like a local folder. (The same
    rule as fraud.sources.is_url; serving imports only fraud.features and fraud.errors.)"""
    return "://" in path


def _check_base_exists(model: ModelSettings) -> ModelSettings:
    """A base path that is not a directory is a mistake to report (exit 2), not a model to wait for: TF Serving
    would log "No versions of servable found" forever and answer 404."""
    if not is_url(model.base_path) and not Path(model.base_path).is_dir():
        raise ConfigError(f"model {model.name!r}: base path {model.base_path} is not a directory. Point it at the "
                          f"Pusher's folder (<serving-dir>/{F.MODEL_NAME}, e.g. runs/demo/serving_models/"
                          f"{F.MODEL_NAME} after `make demo`), or create it to wait for a first push")
    return model


def model_settings(options: ServerOptions) -> list[ModelSettings]:
    """The models to serve, each with a base path that exists (ConfigError otherwise)."""
    return [_check_base_exists(m) for m in _configured_models(options)]


def _configured_models(options: ServerOptions) -> list[ModelSettings]:
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


def reload_roots(options: ServerOptions, models: list[ModelSettings]) -> tuple[Path, ...] | None:
    """Where HandleReloadConfigRequest may point base paths (symbolic links resolved), or None when disabled:
    --model-root, or the folders holding the configured (local) base paths."""
    if not options.enable_reload_config:
        return None
    if options.model_root is not None:
        return (Path(os.path.realpath(options.model_root)),)
    return tuple(sorted({Path(os.path.realpath(m.base_path)).parent for m in models if not is_url(m.base_path)}))


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


def configure_tensorflow_threads(options: ServerOptions) -> None:
    """TF Serving's --tensorflow_{intra,inter}_op_parallelism. TensorFlow takes them only before its runtime
    starts: a server embedded in a process that already ran TensorFlow keeps the process's settings (logged)."""
    import tensorflow as tf

    wanted = {"intra": options.tensorflow_intra_op_parallelism, "inter": options.tensorflow_inter_op_parallelism}
    setters = {"intra": tf.config.threading.set_intra_op_parallelism_threads,
               "inter": tf.config.threading.set_inter_op_parallelism_threads}
    for kind, threads in wanted.items():
        if threads:
            try:
                setters[kind](threads)
            except RuntimeError as exc:
                log.warning("Cannot set TensorFlow %s-op parallelism to %d here (%s): keeping %d", kind, threads,
                            exc, getattr(tf.config.threading, f"get_{kind}_op_parallelism_threads")())


class _TooManyConnections(asyncio.Protocol):
    """Answers a connection beyond --rest-max-connections with a 503 and its reason, then closes it."""

    def __init__(self, limit: int):
        self.limit = limit

    def connection_made(self, transport) -> None:
        body = (f'{{"error": "too many connections: this server keeps at most {self.limit} open; retry, or reuse '
                'a connection"}').encode()
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        transport.close()


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.metrics = ServingMetrics()
        self.core = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self.prometheus_path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._closers: list = []  # coroutine functions closing the front ends, in order
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.scheduler = None  # serving.batching.BatchScheduler with --enable_batching

    def start(self) -> "ModelServer":
        """Load what is on disk, then open the ports (as TF Serving does), then poll in the background."""
        from serving.manager import ServerCore

        options = self.options
        monitoring = (parse_monitoring_config(options.monitoring_config_file)
                      if options.monitoring_config_file else None)
        self.prometheus_path = prometheus_path(monitoring)
        models = model_settings(options)
        for m in models:
            log.info("Model %s: base path %s, version policy %s, labels %s", m.name, m.base_path,
                     m.policy.describe(), m.labels or "{}")
        # Read once, before anything loads (a bad file: exit 2); _open uses them.
        self._ssl = parse_ssl_config(options.ssl_config_file) if options.ssl_config_file is not None else None
        self._reload_roots = reload_roots(options, models)
        configure_tensorflow_threads(options)
        if options.enable_batching:
            self.scheduler = make_scheduler(options, self.metrics)
        self.core = ServerCore(models, self.metrics, enable_warmup=options.enable_warmup, scheduler=self.scheduler)
        self.metrics.model_known = self.core.knows  # made-up model names share one label value
        self.core.poll()

        self._pool = futures.ThreadPoolExecutor(max_workers=options.request_threads, thread_name_prefix="request")
        self._loop = asyncio.new_event_loop()
        self._spawn("frontend", self._loop.run_forever)
        try:
            asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()
        except BaseException:
            self.stop(0)
            raise
        log.info("Running gRPC ModelServer at %s:%d ...%s", options.host, self.grpc_port,
                 " (TLS)" if options.ssl_config_file else "")
        log.info("Exporting HTTP/REST API at:%s:%d ...", options.host, self.rest_port)
        if self.prometheus_path:
            log.info("Prometheus metrics at http://%s:%d%s", options.host, self.rest_port, self.prometheus_path)
        self._spawn("poller", self._poll_loop)
        return self

    async def _open(self) -> None:
        """On the event loop: the gRPC server, then the REST server (raises OSError naming a port in use)."""
        import grpc
        from aiohttp import web
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from serving.frontend import Runner
        from serving.grpc_service import ModelService, PredictionService
        from serving.rest import RestApi

        options = self.options
        runner = Runner(asyncio.get_running_loop(), self._pool, self.scheduler)
        grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                                               ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
                                               ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.core, self.metrics, runner), grpc_server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.core, runner, reload_roots=self._reload_roots), grpc_server)
        address = f"{options.host}:{options.grpc_port}"
        try:
            if self._ssl is not None:
                ssl = self._ssl
                credentials = grpc.ssl_server_credentials(
                    [(ssl.server_key.encode(), ssl.server_cert.encode())],
                    root_certificates=ssl.custom_ca.encode() or None, require_client_auth=ssl.client_verify)
                self.grpc_port = grpc_server.add_secure_port(address, credentials)
            else:
                self.grpc_port = grpc_server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {options.host}:{options.grpc_port}: {exc}") from exc
        if not self.grpc_port:
            raise OSError(f"cannot listen for gRPC on {options.host}:{options.grpc_port} (port in use?)")
        await grpc_server.start()
        self._closers.append(lambda grace: grpc_server.stop(grace))

        app = RestApi(self.core, self.metrics, runner, self.prometheus_path).application()
        http = web.AppRunner(app, access_log=None, handle_signals=False,
                             keepalive_timeout=options.rest_idle_timeout_seconds)
        await http.setup()
        self._closers.append(lambda grace: http.cleanup())
        connections = http.server

        def protocol():  # one per accepted connection
            if len(connections.connections) >= options.rest_max_connections:
                return _TooManyConnections(options.rest_max_connections)
            return connections()

        try:
            listener = await asyncio.get_running_loop().create_server(
                protocol, options.host, options.rest_port, reuse_address=True)
        except OSError as exc:
            raise OSError(f"cannot listen for HTTP on {options.host}:{options.rest_port}: "
                          f"{exc.strerror or exc}") from None

        async def close_listener(grace):
            listener.close()
            await listener.wait_closed()
        self._closers.append(close_listener)
        self.rest_port = listener.sockets[0].getsockname()[1]

    async def _close(self, grace: float) -> None:
        for close in reversed(self._closers):
            try:
                await close(grace)
            except Exception:  # noqa: BLE001 - close what can be closed
                log.exception("closing a front end")
        self._closers.clear()

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
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._close(grace), loop).result(grace + 5)
            except Exception:  # noqa: BLE001 - shutting down regardless
                log.exception("closing the front ends")
            loop.call_soon_threadsafe(loop.stop)
        for thread in self._threads:
            thread.join(timeout=grace + 1)
        if loop is not None and not loop.is_running():
            loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.scheduler is not None:
            self.scheduler.stop()

    def wait(self) -> None:
        self._stop.wait()
