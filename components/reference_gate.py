"""ReferenceGate: the TFX adapter of fraud.reference (see its docstring for the design).

It trains the reference models on the behavioural examples' train split, scores them on the eval split with the
Evaluator's own metric configuration, and writes a ModelBlessing of its own: blessed only when the Evaluator
blessed the candidate AND the candidate's eval PR-AUC is at least the best reference's minus the tolerance. The
Pusher and the latest-blessed-model resolver read this blessing, so a model refused here is never pushed and
never becomes the next run's baseline. The full result (every reference's metrics, time, detail or error) is
F.REFERENCE_FILE inside the artifact, for the report and the run summary.
"""
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from fraud import examples as X
from fraud import features as F
from fraud import reference as R
from fraud import threshold as T
from fraud.runs import overall_metrics

_COPIED = ("current_model", "current_model_id", "baseline_model", "baseline_model_id")  # the resolver needs them


@component
def ReferenceGate(
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    evaluator_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    tolerance: Parameter[float],
    feature_set: Parameter[str],
    seed: Parameter[int],
):
    needed = R.columns_needed(feature_set)
    train = X.read_columns(examples.uri, F.SPLIT_TRAIN, needed)
    evals = X.read_columns(examples.uri, F.SPLIT_EVAL, needed)
    # The Evaluator's config and overall metrics only: its plots and slices are not needed here.
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config = eval_config_writer.load_eval_run(evaluation.uri)[0]
    candidate, _ = overall_metrics(evaluation.uri)
    print(f"reference gate: training {', '.join(F.REFERENCES)} on {len(train[F.LABEL]):,} train rows, "
          f"scoring {len(evals[F.LABEL]):,} eval rows", flush=True)
    # The candidate's scores of the same eval rows (same files, same order): the paired bootstrap needs them.
    signature = T.load_examples_signature(path_utils.serving_model_path(model.uri))
    candidate_scores = T.score_serialized(signature, X.read_records(X.split_files(examples.uri, F.SPLIT_EVAL)))
    references = R.run_references(train, evals, eval_config, feature_set=feature_set, seed=seed,
                                  progress=lambda line: print(line, flush=True), candidate_scores=candidate_scores)
    result = R.GateResult(
        candidate={k: float(v) for k, v in candidate.items()}, references=references, tolerance=float(tolerance),
        train_rows=int(len(train[F.LABEL])), train_fraud=int(train[F.LABEL].sum()),
        eval_rows=int(len(evals[F.LABEL])),
        evaluator_blessed=evaluator_blessing.get_int_custom_property("blessed") == 1,
        eval_fraud=int(evals[F.LABEL].sum()))
    io_utils.write_string_file(os.path.join(blessing.uri, F.REFERENCE_FILE), result.to_json())
    for key in _COPIED:
        if evaluator_blessing.has_custom_property(key):
            value = evaluator_blessing.get_custom_property(key)
            if isinstance(value, int):
                blessing.set_int_custom_property(key, value)
            else:
                blessing.set_string_custom_property(key, str(value))
    blessing.set_int_custom_property("blessed", int(result.blessed))
    blessing.set_int_custom_property(F.PROP_REFERENCE_PASSED, int(result.passed))
    if result.best is not None:
        blessing.set_float_custom_property(F.PROP_REFERENCE_PR_AUC, result.best.metrics[F.METRIC_PR_AUC])
    io_utils.write_string_file(os.path.join(blessing.uri, "BLESSED" if result.blessed else "NOT_BLESSED"), "")
    evaluator = "blessed" if result.evaluator_blessed else "NOT blessed"
    print(f"reference gate {result.reason}; the Evaluator: {evaluator}; blessed: "
          f"{'YES' if result.blessed else 'NO'}", flush=True)
