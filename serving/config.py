"""TF Serving's configuration files, parsed with TF Serving's own protos.

- `--model_config_file`: `tensorflow.serving.ModelServerConfig` (shipped in tensorflow-serving-api).
- `--monitoring_config_file`: `tensorflow.serving.MonitoringConfig`, and `--batching_parameters_file`:
  `tensorflow.serving.BatchingParameters`. The PyPI package `tensorflow-serving-api` does not ship these two
  (tensorflow_serving/config/monitoring_config.proto and servables/tensorflow/session_bundle_config.proto),
  so their descriptors are declared here with upstream's package, names, field numbers and types, in a
  private descriptor pool. A field upstream does not have is then a parse error here too, which is what
  the tests rely on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from fraud.errors import SettingsError

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
TENSORFLOW_PLATFORM = "tensorflow"


class ConfigError(SettingsError):
    """A configuration file that TF Serving would refuse; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Upstream protos missing from tensorflow-serving-api
# ----------------------------------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _F:
    proto = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        proto.type_name = type_name
    return proto


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    monitoring.message_type.add(name="PrometheusConfig", field=[
        _field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)])
    monitoring.message_type.add(name="MonitoringConfig", field=[
        _field("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")])
    pool.Add(monitoring)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    batching.message_type.add(name="BatchingParameters", field=[
        _field("max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        _field("num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        _field("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
        _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
    ])
    pool.Add(batching)

    ssl = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3")
    ssl.message_type.add(name="SSLConfig", field=[
        _field("server_key", 1, _F.TYPE_STRING), _field("server_cert", 2, _F.TYPE_STRING),
        _field("custom_ca", 3, _F.TYPE_STRING), _field("client_verify", 4, _F.TYPE_BOOL)])
    pool.Add(ssl)
    return pool


_POOL = _build_pool()
_FACTORY = message_factory.MessageFactory(_POOL)
MonitoringConfig = _FACTORY.GetPrototype(_POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
BatchingParameters = _FACTORY.GetPrototype(_POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
SSLConfig = _FACTORY.GetPrototype(_POOL.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


def _parse_text(path: str | Path, message):
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_model_server_config(path: str | Path):
    from tensorflow_serving.config import model_server_config_pb2

    config = _parse_text(path, model_server_config_pb2.ModelServerConfig())
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: expected a model_config_list (custom_model_config is not supported)")
    return config


def parse_monitoring_config(path: str | Path):
    return _parse_text(path, MonitoringConfig())


def parse_batching_parameters(path: str | Path):
    params = _parse_text(path, BatchingParameters())
    sizes = list(params.allowed_batch_sizes)
    if sizes and (sizes != sorted(set(sizes)) or
                  (params.HasField("max_batch_size") and sizes[-1] != params.max_batch_size.value)):
        raise ConfigError(f"{path}: allowed_batch_sizes must increase and end at max_batch_size")
    if params.HasField("num_batch_threads") and params.num_batch_threads.value < 1:
        raise ConfigError(f"{path}: num_batch_threads must be >= 1")
    return params


def prometheus_path(monitoring_config) -> str | None:
    """The metrics path when Prometheus export is enabled, else None (TF Serving then answers 404)."""
    if monitoring_config is None or not monitoring_config.prometheus_config.enable:
        return None
    return monitoring_config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


# ----------------------------------------------------------------------------------------------
# What the local server needs from a model config, in plain Python
# ----------------------------------------------------------------------------------------------
LATEST = "latest"
ALL = "all"
SPECIFIC = "specific"


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = LATEST
    num_versions: int = 1  # latest
    versions: tuple[int, ...] = ()  # specific

    def choose(self, candidates: list[int]) -> list[int]:
        """The versions to serve among the loadable ones on disk (ascending)."""
        candidates = sorted(candidates)
        if self.kind == ALL:
            return candidates
        if self.kind == SPECIFIC:
            return [v for v in candidates if v in self.versions]
        return candidates[-max(self.num_versions, 1):]

    def describe(self) -> str:
        if self.kind == LATEST:
            return f"latest {{ num_versions: {self.num_versions} }}"
        if self.kind == SPECIFIC:
            return "specific { " + " ".join(f"versions: {v}" for v in self.versions) + " }"
        return "all {}"


@dataclass(frozen=True)
class ModelSettings:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict = field(default_factory=dict)  # label -> version


def model_settings_from_proto(config) -> list[ModelSettings]:
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("expected a model_config_list (custom_model_config is not supported)")
    models = []
    seen = set()
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ConfigError("a model config has no name")
        if entry.name in seen:
            raise ConfigError(f"model {entry.name!r} is configured twice")
        seen.add(entry.name)
        if not entry.base_path:
            raise ConfigError(f"model {entry.name!r} has no base_path")
        if entry.model_platform and entry.model_platform != TENSORFLOW_PLATFORM:
            raise ConfigError(f"model {entry.name!r}: model_platform {entry.model_platform!r} is not supported "
                              f"(only {TENSORFLOW_PLATFORM!r})")
        which = entry.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy(ALL)
        elif which == "specific":
            if not entry.model_version_policy.specific.versions:
                raise ConfigError(f"model {entry.name!r}: a specific version policy needs at least one version")
            policy = VersionPolicy(SPECIFIC, versions=tuple(entry.model_version_policy.specific.versions))
        elif which == "latest":
            policy = VersionPolicy(LATEST, num_versions=max(entry.model_version_policy.latest.num_versions, 1))
        else:
            policy = VersionPolicy()
        models.append(ModelSettings(entry.name, entry.base_path, policy, dict(entry.version_labels)))
    return models


def parse_ssl_config(path: str | Path):
    """TF Serving's --ssl_config_file: PEM text of the server's key and certificate, optionally a CA whose
    client certificates are required (client_verify). It secures the gRPC port, as TF Serving does."""
    config = _parse_text(path, SSLConfig())
    if not config.server_key.strip() or not config.server_cert.strip():
        raise ConfigError(f"{path}: server_key and server_cert (PEM text) are both required")
    if config.client_verify and not config.custom_ca.strip():
        raise ConfigError(f"{path}: client_verify needs custom_ca, the CA that signs the clients' certificates")
    return config


# ----------------------------------------------------------------------------------------------
# Writing a model config that pins pushed versions (`fraudctl serve-config`)
# ----------------------------------------------------------------------------------------------
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"


def pinned_model_config(model_name: str, base_path: str, available: list[int], *, stable: int | None = None,
                        canary: int | None = None):
    """A ModelServerConfig serving two pushed versions by label (specific policy): `canary` (default: the
    newest) and `stable` (default: the one before it, or the canary itself when only one exists). Refuses
    versions that are not among `available`: TF Serving would load nothing for them."""
    from tensorflow_serving.config import model_server_config_pb2

    versions = sorted(set(available))
    if not versions:
        raise ConfigError(f"no pushed version under {base_path}: run the pipeline (it pushes there) first")
    canary = versions[-1] if canary is None else canary
    if stable is None:
        older = [v for v in versions if v < canary]
        stable = older[-1] if older else canary
    missing = [v for v in (stable, canary) if v not in versions]
    if missing:
        raise ConfigError(f"version(s) {', '.join(map(str, missing))} not pushed under {base_path}; "
                          f"pushed: {', '.join(map(str, versions))}")
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = model_name, base_path, TENSORFLOW_PLATFORM
    entry.model_version_policy.specific.versions.extend(sorted({stable, canary}))
    entry.version_labels[STABLE_LABEL] = stable
    entry.version_labels[CANARY_LABEL] = canary
    return config


def model_config_text(config) -> str:
    return text_format.MessageToString(config)
