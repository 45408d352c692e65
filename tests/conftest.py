"""Shared fixtures. The expensive one, `small_run`, runs the real pipeline once per test session on a
small generated data set; tests that need a pushed model or TFX artifacts reuse it.

Suites by kind, each folder marked with its kind (registered in pytest.ini, --strict-markers):
tests/unit (fast, no pipeline), tests/e2e (the real pipeline), tests/serving (the model server),
tests/airflow (Airflow itself). Helpers shared by them are in tests/helpers.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ci_skips import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401
from tests.helpers import PipelineRun, generate, run_pipeline

_KINDS = ("unit", "e2e", "serving", "airflow")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in _KINDS:
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("data") / "transactions")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_data) -> PipelineRun:
    """One real pipeline run (LocalDagRunner) on small data; a model is pushed."""
    base = tmp_path_factory.mktemp("run")
    run = run_pipeline(small_data, base / "root", base / "serving")
    assert run.exit_code == 0, f"pipeline failed (exit {run.exit_code}):\n{run.output[-4000:]}"
    return run


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    """The TF Serving under test: the one named by TFSERVING_REST_URL/TFSERVING_GRPC_TARGET if set,
    else the local server on small_run's pushed model (shared by the serving test modules)."""
    from tests.serving.support import ENV_REST, serving_target

    if os.environ.get(ENV_REST):
        return serving_target(request.config, None, None)
    small_run = request.getfixturevalue("small_run")
    return serving_target(request.config, small_run.model_base, tmp_path_factory.mktemp("serving"))
