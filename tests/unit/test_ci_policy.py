"""CI runs every test: a skip that is not explicitly allowed fails the run (tests/ci_skips.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def _pytest(tmp_path, ci: str | None):
    test = tmp_path / "test_sample.py"
    test.write_text("import pytest\n\ndef test_runs():\n    assert True\n\n"
                    "def test_skips():\n    pytest.skip('needs something this machine lacks')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["FRAUD_SKIP_REPORT"] = str(tmp_path / "skips.txt")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-q", "-p", "no:cacheprovider",
                           str(test)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_an_unapproved_skip_fails_a_ci_run(tmp_path, ci):
    proc = _pytest(tmp_path, ci)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "skipped tests: 1, 1 not allowed under CI" in proc.stdout
    assert "test_sample.py::test_skips: needs something this machine lacks" in proc.stdout
    assert (tmp_path / "skips.txt").read_text() == "1\n"  # what .ci/run prints


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_elsewhere_a_skip_is_reported_and_passes(tmp_path, ci):
    proc = _pytest(tmp_path, ci)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "skipped tests: 1" in proc.stdout and "not allowed" not in proc.stdout
