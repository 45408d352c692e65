"""create_pipeline(): the whole TFX pipeline as a pure function of its arguments.

It reads no environment, touches no files and has no defaults of its own: runners (local_runner, the Airflow
DAG) build fraud.settings.PipelineSettings and call it with `settings.pipeline_kwargs()`.
(The module is not called pipeline.py: with Airflow's dags_folder set to this folder, a pipeline.py here would
shadow the `pipeline` package.)
"""
from __future__ import annotations

from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components.behaviour import BehaviouralFeatures
from components.evaluator import Evaluator
from components.ingestion import FraudExampleGen
from components.pusher import Pusher
from components.reference_gate import ReferenceGate
from components.statistics import StatisticsGen
from components.threshold import OperatingThresholdSelector
from components.validation import DataValidationGate
from fraud import features as F
from fraud.eval_config import build_eval_config

COMPONENT_IDS = F.COMPONENT_IDS  # in execution order


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_dir: str,
    serving_model_dir: str,
    metadata_path: str,
    eval_days: int,
    valid_days: int,
    train_steps: int,
    pr_auc_floor: float,
    min_valid_roc_auc: float,
    regression_tolerance: float,
    reference_tolerance: float,
    beam_pipeline_args: list[str],
    feature_set: str,
    label_delay_days: int,
    alerts_per_day: float,
    threshold_split: str,
    decline_precision: float,
    schema_file: str,
    seed: int,
) -> tfx.dsl.Pipeline:
    example_gen = FraudExampleGen(data_dir=data_dir, eval_days=eval_days, valid_days=valid_days)
    # Every later component reads the examples with behavioural features (point-in-time, all splits).
    behaviour = BehaviouralFeatures(examples=example_gen.outputs["examples"], label_delay_days=label_delay_days)
    examples = behaviour.outputs["augmented_examples"]
    statistics_gen = StatisticsGen(examples=examples)  # TFX's, TFDV in process (components/statistics.py)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = DataValidationGate(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=examples,
        schema=gate.outputs["validated_schema"],  # Transform runs only on validated data
        preprocessing_fn="transform_module.preprocessing_fn",
        splits_config=transform_pb2.SplitsConfig(analyze=[F.SPLIT_TRAIN], transform=list(F.SPLITS)),
        # Pre/post-transform statistics would repeat StatisticsGen's work and double Transform's time;
        # drift and anomalies are checked on the raw data by the validation gate.
        disable_statistics=True,
        # Transform only analyses (the train split) and writes the graph; it does not write transformed copies of
        # every split: the Trainer runs the graph over the raw examples as it reads them, as serving does. Writing
        # them read, transformed, encoded and wrote every row once more through Beam's per-record Python I/O.
        materialize=False,
        custom_config={F.CONFIG_FEATURE_SET: feature_set},
    )
    trainer = tfx.components.Trainer(
        run_fn="trainer_module.run_fn",
        examples=examples,  # the raw (behavioural) examples; run_fn applies the Transform graph
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=[F.SPLIT_TRAIN], num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(splits=[F.SPLIT_VALID]),
        custom_config={F.CONFIG_SEED: seed, F.CONFIG_FEATURE_SET: feature_set,
                       F.CONFIG_MIN_VALID_ROC_AUC: min_valid_roc_auc},
    )
    # The operating threshold for the alert budget, recorded inside a copy of the model: the Evaluator
    # evaluates and the Pusher pushes that copy, so every pushed version carries its threshold.
    threshold_selector = OperatingThresholdSelector(
        trained_model=trainer.outputs["model"], examples=examples, alerts_per_day=alerts_per_day,
        split=threshold_split, decline_precision=decline_precision)
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        # Only the reference gate's blessings: a model the Evaluator blessed but the gate refused was never
        # pushed and must not become the baseline.
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=F.NODE_REFERENCE_GATE, output_key="blessing"),
    ).with_id(F.NODE_RESOLVER)
    evaluator = Evaluator(  # TFX's, at the operating threshold recorded with the model (components/evaluator.py)
        examples=examples,
        example_splits=[F.SPLIT_EVAL],
        model=threshold_selector.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=build_eval_config(pr_auc_floor=pr_auc_floor, regression_tolerance=regression_tolerance),
    )
    # Blessed only if the Evaluator blessed it AND it is no worse than simple references on the same data.
    reference_gate = ReferenceGate(
        examples=examples, model=threshold_selector.outputs["model"], evaluation=evaluator.outputs["evaluation"],
        evaluator_blessing=evaluator.outputs["blessing"], tolerance=reference_tolerance, feature_set=feature_set,
        seed=seed).with_id(F.NODE_REFERENCE_GATE)
    pusher = Pusher(  # TFX's, with an atomic push (components/pusher.py)
        model=threshold_selector.outputs["model"],
        model_blessing=reference_gate.outputs["blessing"],  # explicit gate: pushes only what the gate blessed
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
    )
    components = [example_gen, behaviour, statistics_gen, schema_gen, example_validator, gate, transform, trainer,
                  threshold_selector, model_resolver, evaluator, reference_gate, pusher]
    assert tuple(c.id for c in components) == COMPONENT_IDS
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=beam_pipeline_args,
    )
