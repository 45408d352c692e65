"""OperatingThresholdSelector: the TFX adapter of fraud.threshold (see its docstring for the design).

It copies the Trainer's serving model into its own Model artifact, records the threshold chosen for the alert
budget inside the copy (assets.extra/operating_threshold.json) and as custom properties of the artifact.
"""
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from fraud import features as F
from fraud import threshold as T


@component
def OperatingThresholdSelector(
    trained_model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    model: OutputArtifact[standard_artifacts.Model],
    alerts_per_day: Parameter[float],
    split: Parameter[str],
    decline_precision: Parameter[float],
):
    # Artifacts are immutable: the threshold goes into a copy of the Trainer's serving model.
    target = path_utils.serving_model_dir(model.uri)
    io_utils.copy_dir(path_utils.serving_model_path(trained_model.uri), target)
    op = T.select_and_record(target, examples.uri, alerts_per_day=alerts_per_day, split=split,
                            decline_precision=decline_precision)
    model.set_float_custom_property(F.PROP_THRESHOLD, op.threshold)
    model.set_float_custom_property(F.PROP_BUDGET, op.alerts_per_day_budget)
    model.set_string_custom_property(F.PROP_THRESHOLD_SPLIT, op.split)
    model.set_float_custom_property(F.PROP_DECLINE_THRESHOLD, op.decline_threshold)
    print(f"operating threshold {T.format_threshold(op.threshold)}: {op.split_alerts} alerts in {op.split_days} "
          f"days of the {op.split} split ({op.split_alerts_per_day:.1f}/day, budget {op.alerts_per_day_budget:g}/day)"
          + ("" if op.budget_reached else f"; budget not reached: the split has only {op.split_rows} rows"),
          flush=True)
    if op.decline_precision is None:
        print(f"decline threshold: none reaches precision {decline_precision:g} on the {op.split} split; the "
              f"model alone never declines (review only)", flush=True)
    else:
        print(f"decline threshold {T.format_threshold(op.decline_threshold)}: precision "
              f"{op.decline_precision:.3f} on {op.split_declines} {op.split} rows (target {decline_precision:g})",
              flush=True)
