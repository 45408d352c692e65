"""Thin runner: settings -> create_pipeline() -> LocalDagRunner, with progress and a summary.

Exit codes of `fraudctl pipeline run` (fraud.errors, documented in README):
  0  a blessed model was pushed
  3  the pipeline completed but the model was not blessed: nothing pushed
  4  the data was rejected (data contract or validation anomalies): nothing trained or pushed
  1  any other failure; 2 usage errors (bad options)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from fraud import errors, sources
from fraud import features as F
from fraud.settings import PipelineSettings
from pipeline.console import Progress, stderr_to


@dataclass
class RunOutcome:
    exit_code: int
    summary: object | None
    error: str = ""


def run_pipeline(settings: PipelineSettings, echo=print, verbose: bool = False) -> RunOutcome:
    # Imported here: TFX takes seconds to import and `fraudctl --help` should not wait for it.
    from tfx import v1 as tfx

    from fraud.runs import format_summary, summarize
    from pipeline.definition import COMPONENT_IDS, create_pipeline

    settings.pipeline_root.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(**settings.pipeline_kwargs())
    progress = Progress(str(settings.artifacts_root), COMPONENT_IDS, echo)
    echo(f"Running pipeline {settings.pipeline_name!r} ({len(COMPONENT_IDS)} components) "
         f"on {sources.display(settings.data_dir)} -> {settings.pipeline_root}")  # never a database password
    log_path = settings.logs_dir / time.strftime("run-%Y%m%d-%H%M%S.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"Component logs (TensorFlow, Beam, TFX): {log_path}")
    progress.start()
    started = time.time()
    error = None
    with stderr_to(log_path, enabled=not verbose):
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except Exception as exc:  # reported below with the component that failed
            error = exc
        finally:
            progress.stop.set()
        echo(f"Pipeline finished in {time.time() - started:.0f} s (full log: {log_path})\n")
        summary = summarize(str(settings.metadata_path), settings.pipeline_name)
        report_path, report_error = _write_report(settings)
    echo(format_summary(summary))
    echo(f"Blessing needs: PR-AUC >= {settings.pr_auc_floor:g} on the eval split, and PR-AUC, ROC-AUC, recall at "
         f"1% FPR and card precision at {F.DEFAULT_CARD_PRECISION_K} no more than "
         f"{settings.regression_tolerance:g} below the last blessed model"
         + ("" if summary.baseline else " (no blessed model yet: regression check skipped)")
         + f"; and PR-AUC no more than {settings.reference_tolerance:g} below the best reference model")
    echo(f"Evaluation report: {report_path}" if report_path else
         f"Evaluation report not written ({report_error}); retry: fraudctl report --root {settings.pipeline_root}")
    if error is not None:
        message = errors.root_message(error)
        failed = [c for c in summary.components if c.state == "FAILED"]
        where = f" in {failed[0].node_id}" if failed else ""
        echo(f"\nFAILED{where}: {message}")
        code = errors.exit_code_for(error)
        if errors.is_data_rejected(error):
            echo("Nothing was trained or pushed.")
        return RunOutcome(code, summary, message)
    if summary.pushed:
        return RunOutcome(errors.EXIT_PUSHED, summary)
    echo("\nThe new model was NOT pushed: it did not pass the thresholds above.")
    return RunOutcome(errors.EXIT_NOT_BLESSED, summary)


def _write_report(settings: PipelineSettings):
    """<root>/reports/<run id>.html next to the artifacts; a report that cannot be built never changes the
    exit code."""
    from fraud.report import build_report

    try:
        return build_report(settings.pipeline_root, settings.pipeline_name), ""
    except Exception as exc:  # noqa: BLE001 - reported to the user with the command to retry
        return None, f"{type(exc).__name__}: {exc}"
