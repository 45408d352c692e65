"""Fixtures of the container tests (tests/docker): a Docker engine, the project image, a model trained inside it.

The engine is scripts/docker_engine.sh's (CI's .ci/run starts it): without docker, docker-compose or a daemon that
answers, these tests skip with the reason, and fail under CI (tests/ci_skips.py). Everything expensive is cached
between runs: the image is built by docker/build_image.sh (BuildKit's cache: a second when nothing changed), and the
model the stack serves is trained once per image, by the image itself, into a Docker volume named after the image
id (fraudtest-model-<id>), reused until the image changes.

FRAUD_IMAGE names an already built image to test instead of building one (e.g. a candidate from another machine).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci_skips import under_ci
from tests.helpers import REPO, SMALL_DATA, SMALL_TRAIN_STEPS

DEFAULT_IMAGE = "fraud-detection:0.1.0"
UID = 10001  # the image's user (Dockerfile)


def missing(message: str):
    """A missing system dependency: fail under CI, skip with the reason elsewhere."""
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


def run(args, timeout=600, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def docker(*args, **kwargs) -> subprocess.CompletedProcess:
    return run(["docker", *args], **kwargs)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    for tool, package in (("docker", "docker.io"), ("docker-compose", "docker-compose")):
        if not shutil.which(tool):
            missing(f"{tool} not found: install Debian's {package} (scripts/docker_engine.sh does it as root)")
    probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        missing("no Docker daemon answers: start one with scripts/docker_engine.sh (as root) "
                f"({probe.stderr.strip()[-200:]})")


@pytest.fixture(scope="session")
def project_image(docker_engine) -> str:
    """The project image: FRAUD_IMAGE as it is, or built now (base images first, pulled or their stand-ins)."""
    given = os.environ.get("FRAUD_IMAGE")
    if given:
        if docker("image", "inspect", given, check=False).returncode != 0:
            pytest.fail(f"FRAUD_IMAGE={given} is not an image on this engine")
        return given
    run(["bash", "docker/base/build_base_images.sh", "python"], timeout=1800)
    run(["bash", "docker/build_image.sh", DEFAULT_IMAGE], timeout=3600)
    return DEFAULT_IMAGE


def image_id(image: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip().split(":")[-1]


@pytest.fixture(scope="session")
def trained_model_volume(project_image) -> str:
    """A volume holding data/, pipeline/ and serving_models/fraud_detector/<version>/ from `fraudctl generate` and
    `fraudctl pipeline run` on the small data set (tests/helpers.py), run inside the image as its own user.
    Kept between test runs for the same image id (older ones are removed)."""
    volume = f"fraudtest-model-{image_id(project_image)[:12]}"
    listing = docker("run", "--rm", "-v", f"{volume}:/srv/fraud", "--entrypoint", "sh", project_image, "-c",
                     "ls /srv/fraud/serving_models/fraud_detector 2>/dev/null", check=False).stdout.split()
    if any(name.isdigit() for name in listing):
        return volume
    for old in docker("volume", "ls", "-q", "--filter", "name=fraudtest-model-").stdout.split():
        if old != volume:
            docker("volume", "rm", old, check=False)
    script = (f"set -e; fraudctl generate --out /srv/fraud/data --days {SMALL_DATA['days']} "
              f"--users {SMALL_DATA['users']} --seed {SMALL_DATA['seed']} && "
              f"fraudctl pipeline run --data /srv/fraud/data --root /srv/fraud/pipeline "
              f"--serving-dir /srv/fraud/serving_models --train-steps {SMALL_TRAIN_STEPS}")
    proc = docker("run", "--rm", "-v", f"{volume}:/srv/fraud", "--entrypoint", "bash", project_image, "-c", script,
                  timeout=1800, check=False)
    if proc.returncode != 0:
        docker("volume", "rm", volume, check=False)
        raise AssertionError(f"the pipeline failed inside the image (exit {proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return volume


def repo_path(*parts: str) -> Path:
    return REPO.joinpath(*parts)
