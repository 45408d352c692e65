"""The pipeline compiled once for the Airflow DAG file, so that parsing the DAG never imports TFX.

Airflow parses a DAG file in the scheduler every few minutes and again in every task process. Building the
pipeline there would import TFX and TensorFlow (about 20-30 s on 2 cores, bench/dag_import_time.py). Instead:

- `compile_plan(settings)` (imports TFX) compiles `create_pipeline()` with TFX's compiler to its intermediate
  representation (IR) and writes a plan file: the node ids in execution order with their upstream nodes, and the
  IR itself for inspection. `python -m pipeline.airflow_plan` (or `make airflow`) does it at deployment.
- `load_plan(settings)` (light: JSON only) reads it. The file name holds a key of everything that can change the
  compiled pipeline: the settings, the source of pipeline/ and components/, and the TFX version. A change of any
  of them selects a new file; if it is missing, the DAG file compiles it once, in a child process.
- Each task compiles the run's pipeline again (its `dag_run.conf` applied) and runs its node from that IR with
  TFX's own launcher, as `fraudctl pipeline run` does (pipeline/airflow_launch.py); it checks that the node graph
  is still the plan's.

Plan files live in <pipeline root>/airflow_plans/, which the scheduler and every worker share.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

from fraud import features as F
from fraud.errors import SettingsError

REPO_PACKAGES = ("pipeline", "components")  # their source shapes the compiled pipeline
COMPILE_TIMEOUT_S = 600


def _source_digest() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in REPO_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def plan_key(pipeline_kwargs: dict) -> str:
    """What the compiled pipeline depends on: create_pipeline's arguments, this project's source, TFX's version."""
    digest = hashlib.sha256(json.dumps(pipeline_kwargs, sort_keys=True, default=str).encode())
    digest.update(_source_digest().encode())
    digest.update(importlib_metadata.version("tfx").encode())
    return digest.hexdigest()[:20]


def plan_path(settings) -> Path:
    """<pipeline root>/airflow_plans/plan-<key>.json for these pipeline settings."""
    return Path(settings.pipeline_root) / F.AIRFLOW_PLANS_DIR / f"plan-{plan_key(settings.pipeline_kwargs())}.json"


def nodes_of(ir) -> list[tuple[str, list[str]]]:
    """(node id, upstream node ids) of a compiled pipeline (TFX IR), in its execution order."""
    return [(n.pipeline_node.node_info.id, list(n.pipeline_node.upstream_nodes)) for n in ir.nodes]


def compile_plan(settings) -> Path:
    """Compile the pipeline of `settings` (PipelineSettings) and write its plan file atomically; imports TFX."""
    from google.protobuf import json_format
    from tfx.dsl.compiler.compiler import Compiler

    from pipeline.definition import create_pipeline

    path = plan_path(settings)
    ir = Compiler().compile(create_pipeline(**settings.pipeline_kwargs()))
    plan = {"key": path.stem.removeprefix("plan-"), "pipeline_name": ir.pipeline_info.id,
            "nodes": [{"id": node, "upstream": upstream} for node, upstream in nodes_of(ir)],
            "ir": json_format.MessageToDict(ir)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(plan, indent=1))
    os.replace(tmp, path)  # a parse that reads it never sees half a file
    return path


def load_plan(settings, *, compile_missing: bool = True) -> list[tuple[str, list[str]]]:
    """(node id, upstream node ids) in execution order, from the plan file of `settings` (compiled first, in a
    child process, if there is none for these settings and this code)."""
    path = plan_path(settings)
    if not path.exists():
        if not compile_missing:
            raise SettingsError(f"no compiled pipeline at {path}; run `python -m pipeline.airflow_plan` with the "
                                "DAG's settings")
        proc = subprocess.run([sys.executable, "-m", "pipeline.airflow_plan"], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S, env=os.environ.copy())
        if proc.returncode != 0 or not path.exists():
            raise SettingsError(f"compiling the pipeline for the DAG failed (python -m pipeline.airflow_plan): "
                                f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    plan = json.loads(path.read_text())
    return [(node["id"], node["upstream"]) for node in plan["nodes"]]


def main() -> int:
    """Compile the plan of the DAG's settings (the same environment / FRAUD_SETTINGS_FILE as the scheduler)."""
    from pipeline.airflow_settings import load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = compile_plan(settings.pipeline)
    print(f"compiled the pipeline for the Airflow DAG: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
