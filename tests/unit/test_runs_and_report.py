"""fraud.runs and fraud.report on small fabricated inputs (no pipeline): the summary text, reading a run from a
hand-built ML Metadata store, and the report's handling of a run without Transform output."""
from __future__ import annotations

import pytest

from fraud import features as F
from fraud import runs
from fraud.runs import ComponentRun, Node, RunSummary


def _summary(**overrides) -> RunSummary:
    fields = dict(
        run_id="2026-01-02T03:04:05.000001",
        components=[ComponentRun(F.NODE_EXAMPLE_GEN, "COMPLETE", 1.04), ComponentRun(F.NODE_TRAINER, "COMPLETE", 61.25),
                    ComponentRun(F.NODE_EVALUATOR, "COMPLETE", 34.6), ComponentRun(F.NODE_PUSHER, "COMPLETE", 0.0)],
        splits={F.SPLIT_TRAIN: {"rows": 7828, "fraud": 80, "fraud_rate": 80 / 7828},
                F.SPLIT_EVAL: {"rows": 1528, "fraud": 7, "fraud_rate": 7 / 1528}},
        anomaly_count=0,
        candidate={F.METRIC_ROC_AUC: 0.89091, F.METRIC_PR_AUC: 0.53472, F.METRIC_EXAMPLE_COUNT: 1528.0,
                   "not_a_headline_metric": 1.0},
        baseline={F.METRIC_PR_AUC: 0.6},
        blessed=False, failed_thresholds=["pr_auc (change vs baseline, overall) = -0.0653; threshold: change >= -0.02 "
                                          "vs baseline"],
        pushed=False, pushed_version="", pushed_path="", eval_uri="/e")
    fields.update(overrides)
    return RunSummary(**fields)


def test_format_summary_prints_components_data_headline_metrics_and_the_decision():
    assert runs.format_summary(_summary()) == """Run 2026-01-02T03:04:05.000001

Components:
  FraudExampleGen                  COMPLETE      1.0 s
  Trainer                          COMPLETE     61.2 s
  Evaluator                        COMPLETE     34.6 s
  Pusher                           COMPLETE      0.0 s

Data (time split):
  train      7828 rows     80 fraud  (1.02%)
  eval       1528 rows      7 fraud  (0.46%)

Validation anomalies: 0

  metric (eval split)     candidate   baseline
  pr_auc                     0.5347     0.6000
  roc_auc                    0.8909     (none)
  example_count           1528.0000     (none)

Blessed: NO
  failed: pr_auc (change vs baseline, overall) = -0.0653; threshold: change >= -0.02 vs baseline
Pushed: no"""


def test_format_summary_of_a_run_that_stopped_before_evaluation():
    text = runs.format_summary(_summary(splits={}, anomaly_count=None, candidate={}, baseline={}, blessed=None,
                                        failed_thresholds=[]))
    assert text.endswith("Validation anomalies: not checked\nPushed: no")
    assert "Data (time split)" not in text and "Blessed" not in text
    pushed = runs.format_summary(_summary(blessed=True, failed_thresholds=[], pushed=True, pushed_version="17",
                                          pushed_path="/serving/fraud_detector/17"))
    assert pushed.endswith("Blessed: YES\nPushed: version 17 -> /serving/fraud_detector/17")


def test_component_run_groups_a_nodes_outputs_by_artifact_type():
    a, b, c = object(), object(), object()
    node = Node(F.NODE_TRANSFORM, "COMPLETE", 2.0, "", outputs={"transformed_examples": [a], "transform_graph": [b],
                                                                  "other_examples": [c]},
                output_types={"transformed_examples": "Examples", "transform_graph": "TransformGraph",
                              "other_examples": "Examples"})
    run = ComponentRun.of(node)
    assert run.outputs == {"Examples": [a, c], "TransformGraph": [b]}
    assert (run.node_id, run.state, run.seconds, run.error) == (F.NODE_TRANSFORM, "COMPLETE", 2.0, "")


# -------------------------------------------------------------------------------------------------------------
# A hand-built ML Metadata store
# -------------------------------------------------------------------------------------------------------------
def _store(path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config), pb


def _fabricate_run(path, run_name: str, failed_gate: bool = False) -> None:
    """An ExampleGen that wrote Examples with split counts, then a validation gate (failed or with a schema)."""
    store, pb = _store(path)
    run_type = store.put_context_type(pb.ContextType(name="pipeline_run"))
    node_type = store.put_context_type(pb.ContextType(name="node"))
    examples_type = store.put_artifact_type(pb.ArtifactType(name="Examples"))
    schema_type = store.put_artifact_type(pb.ArtifactType(name="Schema"))
    run = pb.Context(type_id=run_type, name=run_name)
    [run.id] = store.put_contexts([run])

    def execute(node_id, state, outputs, error=""):
        node = pb.Context(type_id=node_type, name=f"{F.PIPELINE_NAME}.{node_id}")
        existing = store.get_context_by_type_and_name("node", node.name)
        node.id = existing.id if existing else store.put_contexts([node])[0]
        execution = pb.Execution(type_id=store.put_execution_type(
            pb.ExecutionType(name=node_id, properties={"custom_config": pb.STRING})),
                                 last_known_state=state)
        execution.properties["custom_config"].string_value = '{"feature_set": "single_row"}'
        if error:
            execution.custom_properties["__execution_result__"].string_value = error
        pairs = []
        for key, artifact in outputs.items():
            event = pb.Event(type=pb.Event.OUTPUT)
            event.path.steps.add().key = key
            pairs.append((artifact, event))
        store.put_execution(execution, pairs, [run, node])

    examples = pb.Artifact(type_id=examples_type, uri="/artifacts/examples/1", state=pb.Artifact.LIVE)
    for split, rows, fraud in ((F.SPLIT_TRAIN, 900, 9), (F.SPLIT_VALID, 200, 4), (F.SPLIT_EVAL, 100, 1)):
        examples.custom_properties[F.prop_rows(split)].int_value = rows
        examples.custom_properties[F.prop_fraud(split)].int_value = fraud
    execute(F.NODE_EXAMPLE_GEN, pb.Execution.COMPLETE, {"examples": examples})
    if failed_gate:
        execute(F.NODE_VALIDATION_GATE, pb.Execution.FAILED, {}, error="DataValidationError: 2 anomalies")
    else:
        schema = pb.Artifact(type_id=schema_type, uri="/artifacts/schema/2", state=pb.Artifact.LIVE)
        schema.custom_properties[F.PROP_ANOMALY_COUNT].int_value = 0
        execute(F.NODE_VALIDATION_GATE, pb.Execution.COMPLETE, {"validated_schema": schema})


def test_read_run_and_summarize_walk_a_hand_built_store(tmp_path):
    path = tmp_path / F.METADATA_FILE
    _fabricate_run(path, "run-1")
    _fabricate_run(path, "run-2", failed_gate=True)
    assert runs.list_runs(str(path)) == ["run-1", "run-2"]

    run_id, nodes = runs.read_run(str(path), F.PIPELINE_NAME, "run-1")
    assert run_id == "run-1" and list(nodes) == [F.NODE_EXAMPLE_GEN, F.NODE_VALIDATION_GATE]
    gen = nodes[F.NODE_EXAMPLE_GEN]
    assert gen.state == "COMPLETE" and gen.error == "" and gen.output_types == {"examples": "Examples"}
    assert runs.props(gen.artifact("examples"))[F.prop_rows(F.SPLIT_TRAIN)] == 900
    assert gen.properties["custom_config"] == '{"feature_set": "single_row"}'
    assert runs.props(None) == {}

    latest, nodes = runs.read_run(str(path), F.PIPELINE_NAME)  # the latest by default
    gate = nodes[F.NODE_VALIDATION_GATE]
    assert latest == "run-2" and gate.state == "FAILED" and gate.error == "DataValidationError: 2 anomalies"
    assert "__execution_result__" not in gate.properties and gate.artifact("validated_schema") is None
    with pytest.raises(ValueError, match="no run 'run-3'.*runs: run-1, run-2"):
        runs.read_run(str(path), F.PIPELINE_NAME, "run-3")
    with pytest.raises(FileNotFoundError, match="no ML Metadata"):
        runs.read_run(str(tmp_path / "elsewhere.sqlite"), F.PIPELINE_NAME)

    summary = runs.summarize(str(path), F.PIPELINE_NAME)  # the latest run: the gate failed, no schema
    assert summary.run_id == "run-2" and summary.anomaly_count is None and summary.blessed is None
    assert summary.component(F.NODE_EXAMPLE_GEN).outputs["Examples"][0].uri == "/artifacts/examples/1"
    assert summary.component(F.NODE_VALIDATION_GATE).error == "DataValidationError: 2 anomalies"
    assert summary.splits[F.SPLIT_VALID] == {"rows": 200, "fraud": 4, "fraud_rate": 0.02}
    text = runs.format_summary(summary)
    assert "  valid       200 rows      4 fraud  (2.00%)" in text and "Validation anomalies: not checked" in text


# -------------------------------------------------------------------------------------------------------------
# The report without a pipeline
# -------------------------------------------------------------------------------------------------------------
def test_reference_models_are_not_computed_without_transform_output():
    from fraud.report import reference_inputs

    assert reference_inputs({}, "/e", [], []) == (
        None, f"the run has no Transform graph ({F.NODE_TRANSFORM} did not run)")
    failed = {F.NODE_TRANSFORM: Node(F.NODE_TRANSFORM, "FAILED", 3.0, "OOM")}
    assert reference_inputs(failed, "/e", [], []) == (
        None, f"the run has no Transform graph ({F.NODE_TRANSFORM} ended FAILED)")


def test_the_reference_feature_set_is_the_one_transform_ran_with():
    from fraud.report.references import feature_set_of

    behavioural = F.dense_transformed_features(F.FEATURE_SET_BEHAVIOURAL)
    node = Node(F.NODE_TRANSFORM, "COMPLETE", 1.0, "", properties={"custom_config": '{"feature_set": "single_row"}'})
    assert feature_set_of(node, behavioural) == F.FEATURE_SET_SINGLE_ROW
    unknown = Node(F.NODE_TRANSFORM, "COMPLETE", 1.0, "")  # an older run: the columns tell
    assert feature_set_of(unknown, behavioural) == F.FEATURE_SET_BEHAVIOURAL
    assert feature_set_of(unknown, F.DENSE_TRANSFORMED_FEATURES) == F.FEATURE_SET_SINGLE_ROW


def test_the_reference_section_says_why_it_was_not_computed():
    from fraud.report import Evaluation, ReportData
    from fraud.report.html import _section_references

    data = ReportData(
        run_id="r", pipeline_name=F.PIPELINE_NAME, root="/root", nodes={}, splits={}, anomalies=None, drifts=[],
        evaluation=Evaluation("/e", None, None, {}, {}), blessed=None, failed_thresholds=[], decision=[], pushed={},
        has_baseline=False, operating=None, operating_source="", baseline_operating=None,
        baseline_operating_source="", eval_days=0, eval_frame=None, alert_table=[], slices=[], references=[],
        recompute_max_diff=None, timings={},
        references_note=f"the run has no Transform graph ({F.NODE_TRANSFORM} ended FAILED)")
    section = _section_references(data)
    assert ('<p id="references-not-computed">Not computed: the run has no Transform graph (Transform ended '
            'FAILED).</p>') in section
    assert "Transform graph applied to its examples" in section and 'id="reference-table"' not in section


def test_report_paths_and_errors(tmp_path):
    from fraud.errors import FraudError
    from fraud.report import ReportError, default_report_path, report_main, write_html

    assert default_report_path(tmp_path, "2026-01-02T03:04:05.1 x/y") == \
        tmp_path / F.REPORTS_DIR / "2026-01-02T03-04-05.1-x-y.html"
    out = write_html("<html></html>", tmp_path / F.REPORTS_DIR / "r.html")
    assert out.read_text() == "<html></html>" and [p.name for p in out.parent.iterdir()] == ["r.html"]
    with pytest.raises(ReportError, match=f"not a pipeline root: no {F.METADATA_FILE}") as caught:
        report_main(tmp_path / "nowhere", echo=lambda _: None)
    assert isinstance(caught.value, FraudError)
    _fabricate_run(tmp_path / F.METADATA_FILE, "run-1")
    with pytest.raises(ReportError, match="no run 'other'.*runs: run-1"):
        report_main(tmp_path, run_id="other", echo=lambda _: None)


def test_the_score_distribution_counts_every_score_of_each_class():
    """Scores come as float32; most legitimate ones are far below 1e-4. Each class's shares must add up to 1,
    with the small scores in the first bin (the caption says so)."""
    import numpy as np

    from fraud.report.plots import SCORE_BINS, score_shares

    scores = np.array([2.3e-6, 1e-4, 9e-5, 5e-4, 0.02, 0.5, 1.0, 1.0000001], dtype=np.float32)
    shares = score_shares(scores)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == pytest.approx(3 / 8)  # 2.3e-6, 9e-5 and the float32 1e-4 (9.99999974e-05)
    assert shares[-1] == pytest.approx(2 / 8)
    # What the plot did before: clipped in float32, then binned against float64 edges.
    old_counts, _ = np.histogram(np.clip(scores, 1e-4, 1), bins=SCORE_BINS)
    assert old_counts.sum() < len(scores)


def test_metrics_from_scores_equal_tfmas_combiners_fed_one_example_at_a_time():
    """tfma_metrics_from_scores hands the combiners that flatten their input every row at once; the result must be
    what TFMA's Evaluator gets feeding them one example at a time (every metric of the run's EvalConfig)."""
    import numpy as np
    import pandas as pd
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    from fraud import features as F
    from fraud.eval_config import build_eval_config, with_operating_thresholds
    from fraud.report.metrics import _local_eval_config, tfma_metrics_from_scores

    rng = np.random.default_rng(7)
    n = 3000
    labels = (rng.random(n) < 0.05).astype(np.float32)
    scores = np.clip(rng.random(n) * 0.4 + labels * 0.4, 0, 1).astype(np.float32)
    frame = pd.DataFrame({F.USER_ID: [f"U{i % 300}" for i in range(n)],
                          F.EVENT_TIME: 1_780_000_000 + np.arange(n, dtype=np.int64) * 600})
    eval_config = with_operating_thresholds(build_eval_config(pr_auc_floor=0.2, regression_tolerance=0.02), 0.3, [0.6])
    fast, _ = tfma_metrics_from_scores(labels, scores, eval_config, frame)

    config = _local_eval_config(eval_config)
    computations = list(dict.fromkeys(metric_specs.to_computations(config.metrics_specs, eval_config=config)))
    results = {}
    for c in computations:
        if isinstance(c, metric_types.MetricComputation):
            c.combiner.setup()
            acc = c.combiner.create_accumulator()
            for i in range(n):
                acc = c.combiner.add_input(acc, metric_types.StandardMetricInputs(
                    labels=labels[i:i + 1], predictions=scores[i:i + 1], example_weights=np.ones(1, np.float32),
                    features={F.USER_ID: np.array([frame[F.USER_ID][i].encode()], dtype=object),
                              F.EVENT_TIME: frame[F.EVENT_TIME].to_numpy()[i:i + 1]}))
            results.update(c.combiner.extract_output(acc))
    for c in computations:
        if isinstance(c, metric_types.DerivedMetricComputation):
            results.update(c.result(results))
    slow = {k.name: float(v) for k, v in results.items()
            if not k.name.startswith("_") and isinstance(v, (float, int, np.number))}
    assert slow[F.METRIC_EXAMPLE_COUNT] == n and slow[F.METRIC_CARD_PRECISION] > 0
    assert set(slow) <= set(fast)
    for name, value in slow.items():
        assert fast[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
