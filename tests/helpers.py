"""Helpers shared by the test suites (imported by tests; the fixtures live in conftest.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ci_skips import under_ci

from fraud import features as F

REPO = Path(__file__).resolve().parent.parent
FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")
# Small but realistic: enough days for train/valid/eval and enough fraud for a meaningful PR-AUC.
SMALL_DATA = dict(days=45, users=1500, seed=7)
SMALL_TRAIN_STEPS = 150


def require_system_tool(path_or_name: str, package: str) -> str:
    """A Debian tool some tests need: skip with the reason elsewhere, fail under CI (tests.ci_skips.under_ci)."""
    found = shutil.which(path_or_name)
    if found:
        return found
    message = (f"{path_or_name} not found: install Debian's {package} (make test does it as root; "
               f"see scripts/system_deps.sh)")
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PipelineRun:
    data_dir: Path
    root: Path
    serving_dir: Path
    exit_code: int
    output: str

    @property
    def model_base(self) -> Path:
        return self.serving_dir / F.MODEL_NAME

    def versions(self) -> list[Path]:
        if not self.model_base.is_dir():
            return []
        return sorted((p for p in self.model_base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def run_fraudctl(*args, timeout=1200) -> subprocess.CompletedProcess:
    return subprocess.run([FRAUDCTL, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def generate(out_dir: Path, **overrides) -> Path:
    from fraud.synth import datagen

    params = {**SMALL_DATA, **overrides}
    datagen.generate(out_dir, **params)
    return out_dir


def run_pipeline(data_dir: Path, root: Path, serving_dir: Path, *extra) -> PipelineRun:
    proc = run_fraudctl("pipeline", "run", "--data", data_dir, "--root", root, "--serving-dir", serving_dir,
                        "--train-steps", SMALL_TRAIN_STEPS, *extra)
    return PipelineRun(data_dir, root, serving_dir, proc.returncode, proc.stdout + proc.stderr)


def readme_block(after: str, fence: str, readme: str = "README.md") -> str:
    """The first ```fence block of `readme` after the text `after`, as written (for tests that run the docs)."""
    text = (REPO / readme).read_text()
    start = text.index(f"```{fence}\n", text.index(after)) + len(fence) + 4
    return text[start:text.index("```", start)]


# Runs a README's curl lines as a script: stop at the first failing line, an HTTP error (>= 400) fails.
CURL_PRELUDE = 'set -euo pipefail\ncurl() { command curl -sS --fail-with-body "$@"; echo; }\n'
