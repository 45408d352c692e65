"""The evaluation report of a pipeline run: ONE self-contained HTML file (inline CSS, plots as inline PNG) that a
risk analyst can read without TFX: the blessing decision, what the model catches and what it costs in alerts,
where it is weak, the data behind it, and what simple reference models achieve on the same rows and features.

Sources, so every number can be traced:
- ML Metadata (through fraud.runs): the run's artifacts (examples, statistics, schema, anomalies, Transform
  output, model, baseline, evaluation, blessing, push).
- The TFMA result (the Evaluator's output): every candidate/baseline metric, per slice, and the curves: PR and ROC
  from TFMA's confusion-matrix plot (1,000 thresholds), calibration from its calibration plot. Shown as stored.
- Per-transaction scores: the candidate SavedModel's `serving_examples` signature (the one TFMA calls) run on the
  eval split's examples. TFMA keeps only aggregates; the PEN amounts caught/missed, the score distribution and the
  reference-model comparison need one score per row. The report recomputes the metrics from those scores with
  TFMA's own metric code and shows the largest difference from the stored result (0 when the scores are right).
- Reference models (scikit-learn) on the run's Transform features, scored with the same TFMA metric code, so the
  rows are comparable.

Modules: model (the data), collect (ML Metadata -> ReportData), data (splits, anomalies, drift), metrics (TFMA),
references, plots, html. `build_report(root, pipeline_name, out)` writes `<root>/reports/<run id>.html` by
default; `report_main` is `fraudctl report`.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from fraud import atomic
from fraud import features as F
from fraud.errors import ReportError
from fraud.report.collect import collect, operating_threshold_of
from fraud.report.html import render_html, report_json
from fraud.report.metrics import curves_from_plot, decision_rows, load_evaluation, rejudge, tfma_metrics_from_scores
from fraud.report.model import Curves, DecisionRow, Evaluation, Reference, ReportData
from fraud.report.references import reference_inputs, reference_models, transform_raw
from fraud.runs import list_runs, read_run

__all__ = [
    "Curves", "DecisionRow", "Evaluation", "Reference", "ReportData", "ReportError", "build_report", "collect",
    "curves_from_plot", "decision_rows", "default_report_path", "list_runs", "load_evaluation",
    "operating_threshold_of", "read_run", "reference_inputs", "reference_models", "rejudge", "render_html",
    "report_json", "report_main", "tfma_metrics_from_scores", "transform_raw", "write_html",
]


def default_report_path(root: Path, run_id: str) -> Path:
    return Path(root) / F.REPORTS_DIR / (re.sub(r"[^A-Za-z0-9._-]", "-", run_id) + ".html")


def write_html(text: str, out: Path) -> Path:
    return atomic.write_text(Path(out), text)  # never a half-written report


def build_report(root: Path, pipeline_name: str = F.PIPELINE_NAME, out: Path | None = None,
                 run_id: str | None = None) -> Path:
    """Build the HTML report of a run (the latest by default) and return its path."""
    started = time.time()
    data = collect(Path(root), pipeline_name, run_id)
    t = time.time()
    text = render_html(data)
    data.timings["plots and HTML"] = time.time() - t
    data.timings["total"] = time.time() - started
    return write_html(text, Path(out) if out else default_report_path(Path(root), data.run_id))


def report_main(root: Path, out: Path | None = None, run_id: str | None = None,
                pipeline_name: str = F.PIPELINE_NAME, echo=print) -> Path:
    """`fraudctl report`: build the report of a run (the latest by default) of the pipeline root `root`; returns
    the file written. Default output: <root>/reports/<run id>.html, next to the run's artifacts.

    Raises ReportError (with what to do) when `root` is not a pipeline root or has no such run.
    """
    root = Path(root).expanduser().resolve()
    metadata = root / F.METADATA_FILE
    if not metadata.exists():
        raise ReportError(f"{str(root)!r} is not a pipeline root: no {F.METADATA_FILE} in it "
                          "(give the --root used with `fraudctl pipeline run`)")
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
