"""The project image (Dockerfile): it builds, runs `fraudctl` and the unit tests as its non-root user, carries no
build tools and no secrets, and has a health check and the entrypoint's dispatch."""
from __future__ import annotations

import json

import pytest

from tests.docker.conftest import UID, docker, repo_path

pytestmark = pytest.mark.slow

# Unit tests that need nothing but the installed project (no repository files, no network, no Debian tools).
UNIT_FILES = ("tests/unit/test_decision_policy.py", "tests/unit/test_batching.py", "tests/unit/test_serving_frontend.py",
              "tests/unit/test_ingest_record.py")


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def test_fraudctl_runs_as_the_non_root_user(project_image):
    proc = docker("run", "--rm", project_image, "--help")
    assert "Usage: fraudctl" in proc.stdout
    assert docker("run", "--rm", project_image, "id", "-u").stdout.strip() == str(UID)
    config = inspect(project_image)["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    # The entrypoint dispatches: a program runs as itself, a subcommand goes to fraudctl.
    assert "Usage: fraudctl generate" in docker("run", "--rm", project_image, "generate", "--help").stdout
    assert docker("run", "--rm", project_image, "airflow", "version").stdout.strip().startswith("2.11")


def test_unit_tests_pass_inside_the_image(project_image):
    """The repository's tests mounted read-only; pytest runs as the image's user with the image's venv."""
    proc = docker("run", "--rm", "-v", f"{repo_path('tests')}:/app/tests:ro",
                  "-v", f"{repo_path('pytest.ini')}:/app/pytest.ini:ro", "-w", "/app", "--entrypoint", "bash",
                  project_image, "-c", "test \"$(id -u)\" != 0 && python -m pytest -p no:cacheprovider -q "
                  + " ".join(UNIT_FILES), timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_no_build_tools_and_no_secrets_in_the_image(project_image):
    found = docker("run", "--rm", "--entrypoint", "sh", project_image, "-c",
                   "for t in gcc g++ cc c++ make uv; do command -v $t; done; true").stdout.split()
    assert found == [], f"build tools in the final stage: {found}"
    env = inspect(project_image)["Config"]["Env"]
    assert not [e for e in env if any(word in e.split("=")[0] for word in ("PASSWORD", "SECRET", "FERNET", "TOKEN"))]
    # The build secret (a CA bundle) is mounted for single steps only; the builder's sources and caches stay behind.
    leftovers = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", project_image, "-c",
                       "ls -d /run/secrets/* /app/.env /src /root/.cache/uv 2>/dev/null; true").stdout.split()
    assert leftovers == []
