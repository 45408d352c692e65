"""`fraudctl report`: rebuild the HTML evaluation report of a past run from ML Metadata.

Kept apart from fraud.cli so the CLI module stays import-light (TFX/TF load only when the command runs).
"""
from __future__ import annotations

import time
from pathlib import Path

from fraud import features as F


class ReportError(ValueError):
    """The report cannot be built (no metadata, unknown run); the message says why."""


def report_main(root: Path, out: Path | None = None, run_id: str | None = None,
                pipeline_name: str = F.PIPELINE_NAME, echo=print) -> Path:
    """Build the report of a run (the latest by default) of the pipeline root `root`; returns the file written.

    Default output: <root>/reports/<run id>.html, next to the run's artifacts.
    """
    root = Path(root).expanduser().resolve()
    metadata = root / "metadata.sqlite"
    if not metadata.exists():
        raise ReportError(f"{str(root)!r} is not a pipeline root: no metadata.sqlite in it "
                          "(give the --root used with `fraudctl pipeline run`)")
    from fraud.report import build_report, list_runs  # TF/TFMA: seconds to import

    runs = list_runs(str(metadata))
    if not runs:
        raise ReportError(f"no pipeline run recorded in {metadata}")
    if run_id is not None and run_id not in runs:
        raise ReportError(f"no run {run_id!r} in {metadata}; runs: {', '.join(runs)}")
    started = time.time()
    path = build_report(root, pipeline_name, Path(out).expanduser().resolve() if out else None, run_id)
    echo(f"Report of run {run_id or runs[-1]} written to {path} in {time.time() - started:.0f} s "
         f"(open it in a browser: file://{path})")
    return path
