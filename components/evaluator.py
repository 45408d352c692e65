"""The Evaluator: TFX's, evaluating at the operating threshold recorded with the model it evaluates.

The threshold is chosen at run time (OperatingThresholdSelector, after the Trainer), so the pipeline's EvalConfig
cannot hold it. This executor reads the record from the candidate (and the baseline's own record, if any) and
hands TFX's executor an EvalConfig whose precision, recall and exact confusion matrices are at those thresholds.
TFMA stores the EvalConfig it ran with next to its result, so the report reads the thresholds back from there.
"""
from __future__ import annotations

from tfx import types
from tfx.components import Evaluator as TfxEvaluator
from tfx.components.evaluator import executor as tfx_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs as specs
from tfx.utils import path_utils, proto_utils

from fraud import eval_config as E
from fraud import features as F
from fraud import threshold as T
from fraud.errors import FraudError


def _recorded(models: list[types.Artifact] | None) -> T.OperatingThreshold | None:
    if not models:
        return None
    return T.read_threshold(path_utils.serving_model_path(models[0].uri))


def eval_config_at_thresholds(eval_config_json: str, candidate: T.OperatingThreshold,
                              baseline: T.OperatingThreshold | None) -> str:
    import tensorflow_model_analysis as tfma

    config = proto_utils.json_to_proto(eval_config_json, tfma.EvalConfig())
    more = [candidate.decline_threshold] + ([baseline.threshold] if baseline is not None else [])
    return proto_utils.proto_to_json(E.with_operating_thresholds(config, candidate.threshold, more))


class Executor(tfx_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        candidate = _recorded(input_dict.get(specs.MODEL_KEY))
        if candidate is None:
            raise FraudError("the model to evaluate has no recorded operating threshold "
                             f"({F.THRESHOLD_FILE}): evaluate the OperatingThresholdSelector's model")
        exec_properties = dict(exec_properties)
        exec_properties[specs.EVAL_CONFIG_KEY] = eval_config_at_thresholds(
            exec_properties[specs.EVAL_CONFIG_KEY], candidate, _recorded(input_dict.get(specs.BASELINE_MODEL_KEY)))
        print(f"evaluating at the recorded operating threshold {T.format_threshold(candidate.threshold)}", flush=True)
        return super().Do(input_dict, output_dict, exec_properties)


class Evaluator(TfxEvaluator):
    """TFX's Evaluator with the executor above (same inputs, outputs and parameters)."""
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
