"""Thin runner: settings -> create_pipeline() -> LocalDagRunner, with progress and a summary.

Exit codes of `fraudctl pipeline run` (documented in README):
  0  a blessed model was pushed
  3  the pipeline completed but the model was not blessed: nothing pushed
  4  the data was rejected (data contract or validation anomalies): nothing trained or pushed
  1  any other failure; 2 usage errors (bad options)
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass

from fraud.settings import PipelineSettings, is_url

EXIT_PUSHED, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_BLESSED, EXIT_DATA_REJECTED = 0, 1, 2, 3, 4
DATA_ERRORS = ("DataContractError", "DataValidationError")


@dataclass
class RunOutcome:
    exit_code: int
    summary: object | None
    error: str = ""


class _Progress(threading.Thread):
    """Prints each component as it starts, from the output folders TFX creates (no MLMD locking).

    A component's outputs land in <artifacts>/<component>/<output>/<execution id>/: a new execution folder
    means the component started in this run.
    """

    def __init__(self, artifacts_dir: str, component_ids, echo):
        super().__init__(daemon=True)
        self.artifacts_dir, self.component_ids, self.echo = artifacts_dir, list(component_ids), echo
        self.stop = threading.Event()
        self.before = self._execution_dirs()

    def _execution_dirs(self) -> set[str]:
        return {os.path.relpath(os.path.join(root, d), self.artifacts_dir)
                for root, dirs, _ in os.walk(self.artifacts_dir) for d in dirs
                if os.path.relpath(root, self.artifacts_dir).count(os.sep) == 1}

    def run(self):
        seen, started = set(), time.time()
        while not self.stop.wait(1.0):
            new = self._execution_dirs() - self.before
            for i, cid in enumerate(self.component_ids, 1):
                if cid not in seen and any(path.startswith(cid + os.sep) for path in new):
                    seen.add(cid)
                    self.echo(f"[{i}/{len(self.component_ids)}] {cid} started at +{time.time() - started:.0f}s")


@contextlib.contextmanager
def _stderr_to(path, enabled: bool):
    """Send file descriptor 2 (TF/Beam C++ logs, Python logging, Beam worker processes) to a file, so the
    terminal shows progress and results; stdout (Keras epochs, component messages) stays visible."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_pipeline(settings: PipelineSettings, echo=print, verbose: bool = False) -> RunOutcome:
    # Imported here: TFX takes seconds to import and `fraudctl --help` should not wait for it.
    from tfx import v1 as tfx

    from fraud.run_summary import format_summary, summarize
    from pipeline.pipeline import COMPONENT_IDS, create_pipeline

    settings.pipeline_root.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(**settings.pipeline_kwargs())
    progress = _Progress(str(settings.artifacts_root), COMPONENT_IDS, echo)
    shown = settings.data_dir
    if is_url(shown):
        from fraud.sql_source import redact

        shown = redact(shown)  # never print a database password
    echo(f"Running pipeline {settings.pipeline_name!r} ({len(COMPONENT_IDS)} components) "
         f"on {shown} -> {settings.pipeline_root}")
    log_path = settings.pipeline_root / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"Component logs (TensorFlow, Beam, TFX): {log_path}")
    progress.start()
    started = time.time()
    error = None
    with _stderr_to(log_path, enabled=not verbose):
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
    echo(f"Blessing needs: PR-AUC >= {settings.pr_auc_floor:g} on the eval split, and PR-AUC/ROC-AUC no more "
         f"than {settings.regression_tolerance:g} below the last blessed model"
         + ("" if summary.baseline else " (no blessed model yet: regression check skipped)"))
    echo(f"Evaluation report: {report_path}" if report_path else
         f"Evaluation report not written ({report_error}); retry: fraudctl report --root {settings.pipeline_root}")
    if error is not None:
        message = _root_message(error)
        failed = [c for c in summary.components if c.state == "FAILED"]
        where = f" in {failed[0].node_id}" if failed else ""
        echo(f"\nFAILED{where}: {message}")
        code = EXIT_DATA_REJECTED if any(name in _chain_text(error) for name in DATA_ERRORS) else EXIT_FAILED
        if code == EXIT_DATA_REJECTED:
            echo("Nothing was trained or pushed.")
        return RunOutcome(code, summary, message)
    if summary.pushed:
        return RunOutcome(EXIT_PUSHED, summary)
    echo("\nThe new model was NOT pushed: it did not pass the thresholds above.")
    return RunOutcome(EXIT_NOT_BLESSED, summary)


def _write_report(settings: PipelineSettings):
    """<root>/reports/<run id>.html next to the artifacts; a report that cannot be built never changes the
    exit code."""
    from fraud.report import build_report

    try:
        return build_report(settings.pipeline_root, settings.pipeline_name), ""
    except Exception as exc:  # noqa: BLE001 - reported to the user with the command to retry
        return None, f"{type(exc).__name__}: {exc}"


def _chain_text(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _root_message(exc: BaseException) -> str:
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {exc}"
