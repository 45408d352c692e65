"""Test support for the serving suites (tests/serving/); not part of the product.

`serving_target()` gives the suites the server to test:
- any TF Serving named by environment variables (TFSERVING_REST_URL, TFSERVING_GRPC_TARGET, optionally
  TFSERVING_LABELS="stable,canary"), e.g. the real container from serving/docker-compose.yml;
- otherwise one local server (`fraudctl serve` in a child process) shared by every suite of the session, on free ports,
  serving two versions of the pipeline's pushed model under the checked-in serving/models.config (its
  version numbers replaced by the local ones) and serving/monitoring.config.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fraud import features as F
from serving.config import CANARY_LABEL as CANARY
from serving.config import STABLE_LABEL as STABLE
from serving.process import ServerProcess, start_server

SERVING_DIR = Path(__file__).resolve().parents[2] / "serving"  # the product's configuration files
MODELS_CONFIG = SERVING_DIR / "models.config"
MONITORING_CONFIG = SERVING_DIR / "monitoring.config"
BATCHING_CONFIG = SERVING_DIR / "batching.config"
ENV_REST = "TFSERVING_REST_URL"
ENV_GRPC = "TFSERVING_GRPC_TARGET"
ENV_LABELS = "TFSERVING_LABELS"


@dataclass
class LocalDeployment:
    server: ServerProcess
    base: Path  # the model base dir the server polls
    versions: list  # ascending
    labels: dict  # label -> version
    metrics_path: str | None


@dataclass
class Target:
    rest_url: str
    grpc_target: str
    labels: list = field(default_factory=list)
    local: LocalDeployment | None = None

    @property
    def model_url(self) -> str:
        return f"{self.rest_url}/v1/models/{F.MODEL_NAME}"


_SHARED: dict = {}


def newest_version(model_base: Path) -> Path:
    """The newest complete version folder under a model base (the scorer's rule)."""
    from fraud.scoring import resolve_version_dir

    return resolve_version_dir(Path(model_base))


def push_version(source_version_dir: Path, base: Path, version: int) -> Path:
    """Copy a version the way TFX's Pusher does: everything first, saved_model.pb last."""
    target = Path(base) / str(version)
    shutil.copytree(source_version_dir, target, ignore=shutil.ignore_patterns(F.SAVED_MODEL_FILE))
    shutil.copy2(Path(source_version_dir) / F.SAVED_MODEL_FILE, target / F.SAVED_MODEL_FILE)
    return target


def local_models_config(base: Path, stable: int, canary: int, out: Path) -> Path:
    """What `fraudctl serve-config` writes: versions `stable` and `canary` under `base`, by label."""
    from serving.config import model_config_text, pinned_model_config

    out.write_text(model_config_text(pinned_model_config(F.MODEL_NAME, str(base), [stable, canary], stable=stable,
                                                         canary=canary)))
    return out


def serving_target(pytest_config, model_base: Path, workdir: Path) -> Target:
    """The server under test (see the module docstring); started once per session."""
    if os.environ.get(ENV_REST):
        labels = [x for x in os.environ.get(ENV_LABELS, "").split(",") if x]
        return Target(os.environ[ENV_REST].rstrip("/"), os.environ.get(ENV_GRPC, ""), labels)
    if "target" in _SHARED:
        return _SHARED["target"]
    from serving.config import parse_monitoring_config, prometheus_path

    source = newest_version(Path(model_base))
    base = workdir / "models" / F.MODEL_NAME
    base.mkdir(parents=True)
    stable, canary = int(source.name), int(source.name) + 1
    push_version(source, base, stable)
    push_version(source, base, canary)
    config = local_models_config(base, stable, canary, workdir / "models.config")
    server = start_server(None, workdir / "server.log", model_config_file=config,
                          monitoring_config_file=MONITORING_CONFIG)
    pytest_config.add_cleanup(server.stop)
    deployment = LocalDeployment(server, base, [stable, canary], {STABLE: stable, CANARY: canary},
                                 prometheus_path(parse_monitoring_config(MONITORING_CONFIG)))
    target = Target(server.rest_url, server.grpc_target, [STABLE, CANARY], deployment)
    _SHARED["target"] = target
    return target
