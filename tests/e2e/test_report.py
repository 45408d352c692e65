"""The evaluation report: built from a real run (every section, values equal to the TFMA result, opens in headless
Chromium), a not-blessed decision that names the failing threshold, the operating threshold chosen for an
alert budget and recorded with the model, and reference models on the run's Transform features."""
import base64
import copy
import io
import json
import math
import re
import subprocess
import time
import types

import numpy as np
import pytest

from fraud import features as F
from tests.helpers import require_system_tool

SECTIONS = ("decision", "headline", "operating-threshold", "plots", "alert-budget", "slices", "data",
            "reference-models", "run")
HEADLINE = (F.METRIC_PR_AUC, F.METRIC_ROC_AUC, F.METRIC_RECALL_AT_1PCT_FPR, F.METRIC_CALIBRATION,
            F.METRIC_EXAMPLE_COUNT)


def _payload(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match, "no embedded report data"
    return json.loads(match.group(1).replace("<\\/", "</"))


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"section {section_id!r} missing"
    return match.group(1)


def _cells(html: str, model: str, metric: str) -> list[tuple[str, str]]:
    """(data-value, displayed text) of every table cell of one model's metric."""
    return re.findall(rf'<td data-model="{re.escape(model)}" data-metric="{re.escape(metric)}" '
                      r'data-value="([^"]*)">([^<]*)</td>', html)


# -------------------------------------------------------------------------------------------------------------
# Fast: the threshold rule, without a pipeline
# -------------------------------------------------------------------------------------------------------------
def _next_lower(scores, t):
    """The highest score below t: the next candidate threshold down."""
    below = np.asarray(scores, dtype=np.float64)[np.asarray(scores, dtype=np.float64) < t]
    return float(below.max()) if len(below) else None


def test_threshold_for_a_budget_is_the_lowest_score_within_it_and_tfma_counts_the_same():
    from fraud import threshold as T
    from fraud.eval_config import build_eval_config
    from fraud.report import tfma_metrics_from_scores

    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.02).astype(np.float32)
    scores = np.clip(rng.beta(0.3, 12, 3000) + labels * rng.random(3000) * 0.6, 0, 1).astype(np.float32)
    days, budget = 7, 10.0
    t, alerts = T.choose_threshold(scores, days, budget)
    assert alerts == T.flagged(scores, t).sum() <= budget * days < T.flagged(scores, _next_lower(scores, t)).sum()
    assert t in scores  # one of the scores: the finest grid there is
    # TFMA's own exact confusion matrix at that threshold counts the same alerts.
    import pandas as pd

    config = build_eval_config(pr_auc_floor=0.2, regression_tolerance=0.02, operating_threshold=t)
    rows = pd.DataFrame({F.USER_ID: [f"U{i % 900}" for i in range(len(labels))],
                         F.EVENT_TIME: 1780300000 + np.arange(len(labels)) * 86})
    metrics, _ = tfma_metrics_from_scores(labels, scores, config, rows)
    assert metrics[F.METRIC_EXAMPLE_COUNT] == len(labels)
    tp = (T.flagged(scores, t) & (labels > 0)).sum()
    assert metrics[F.METRIC_PRECISION] == pytest.approx(tp / alerts, abs=1e-9)
    assert metrics[F.METRIC_RECALL] == pytest.approx(tp / labels.sum(), abs=1e-9)


def test_budgets_give_different_thresholds_when_scores_are_tiny():
    """Legitimate scores around 1e-6 (the demo's median is 2.3e-6): each budget gets its own threshold and uses
    the budget, where a fixed 0.001 grid gave one threshold and far fewer alerts for every budget."""
    from fraud import threshold as T

    rng = np.random.default_rng(5)
    scores = np.concatenate([10 ** rng.uniform(-8, -4, 20_000), rng.uniform(0.2, 1.0, 30)]).astype(np.float32)
    days = 7
    chosen = {b: T.choose_threshold(scores, days, b) for b in (50.0, 100.0, 250.0)}
    assert len({t for t, _ in chosen.values()}) == 3
    for budget, (t, alerts) in chosen.items():
        assert t < 1e-4 and alerts == int(budget * days)  # small scores resolved, the budget used
    assert T.budget_reached(len(scores), days, 250.0)
    # A budget larger than the split: not reached, and the record says so.
    assert not T.budget_reached(100, days, 50.0)
    assert T.choose_threshold(scores[:100], days, 50.0) == (0.0, 100)


def test_the_decline_threshold_is_the_lowest_score_reaching_the_precision():
    from fraud import threshold as T

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], np.float32)
    labels = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    # score > 0.3 flags six rows, 5 frauds (0.83); > 0.2 flags seven, 6 frauds (0.857); > 0.1 flags 8, 6 (0.75)
    t, measured, rows = T.choose_decline_threshold(scores, labels, at_least=0.05, precision=0.85)
    assert (t, rows) == (pytest.approx(0.2), 7) and measured == pytest.approx(6 / 7)
    # not below at_least: > 0.4 flags the five frauds above it
    assert T.choose_decline_threshold(scores, labels, at_least=0.25, precision=0.85)[::2] == (pytest.approx(0.4), 5)
    # fewer than MIN_DECLINE_ROWS rows above 0.5: too few to measure a precision
    assert T.choose_decline_threshold(scores, labels, at_least=0.45, precision=0.85) == (T.NEVER, None, 0)
    assert T.flagged(scores, t).sum() == rows


def test_one_threshold_for_tfma_set_from_the_models_record():
    from components.evaluator import eval_config_at_thresholds
    from tfx.utils import proto_utils
    import tensorflow_model_analysis as tfma

    from fraud import threshold as T
    from fraud.eval_config import build_eval_config, operating_thresholds_of

    config = build_eval_config(pr_auc_floor=0.2, regression_tolerance=0.02)
    assert not any(json.loads(m.config).get("name") in (F.METRIC_PRECISION, F.METRIC_RECALL)
                   for m in config.metrics_specs[0].metrics)  # no fixed threshold in the pipeline's config
    op = T.OperatingThreshold(threshold=2.3e-6, alerts_per_day_budget=50.0, split="valid", split_days=7,
                              split_rows=4000, split_alerts=350, decline_threshold=0.71)
    base = T.OperatingThreshold(threshold=4.1e-5, alerts_per_day_budget=50.0, split="valid", split_days=7,
                                split_rows=4000, split_alerts=350)
    patched = proto_utils.json_to_proto(eval_config_at_thresholds(proto_utils.proto_to_json(config), op, base),
                                        tfma.EvalConfig())
    names = {json.loads(m.config)["name"]: json.loads(m.config) for m in patched.metrics_specs[0].metrics}
    assert names[F.METRIC_PRECISION]["thresholds"] == names[F.METRIC_RECALL]["thresholds"] == [2.3e-6]
    assert operating_thresholds_of(patched) == [2.3e-6, 4.1e-5, 0.71]
    twice = eval_config_at_thresholds(proto_utils.proto_to_json(patched), op, None)  # replaces, never adds
    assert len(proto_utils.json_to_proto(twice, tfma.EvalConfig()).metrics_specs[0].metrics) == len(names)


def test_threshold_file_round_trips(tmp_path):
    from fraud import threshold as T

    op = T.OperatingThreshold(threshold=0.123, alerts_per_day_budget=50.0, split="valid", split_days=7,
                              split_rows=4000, split_alerts=341)
    T.write_threshold(str(tmp_path), op)
    assert T.read_threshold(str(tmp_path)) == op
    assert json.loads((tmp_path / F.THRESHOLD_FILE).read_text())["rule"] == f"alert when {F.SCORE_OUTPUT} > threshold"
    assert T.read_threshold(str(tmp_path / "elsewhere")) is None


def test_report_of_a_directory_that_is_not_a_pipeline_root_says_so(tmp_path):
    from fraud.report import ReportError, report_main

    with pytest.raises(ReportError, match=f"not a pipeline root: no {F.METADATA_FILE}"):
        report_main(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------------------------------
# Slow: a report of the real run
# -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(small_run):
    from fraud.report import report_main

    started = time.time()
    path = report_main(small_run.root, None, echo=lambda _: None)
    seconds = time.time() - started
    html = path.read_text(encoding="utf-8")
    return types.SimpleNamespace(path=path, html=html, data=_payload(html), seconds=seconds)


@pytest.mark.slow
def test_report_is_written_next_to_the_run_with_every_section(small_run, built):
    from fraud.runs import read_run

    run_id, nodes = read_run(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    assert built.path.parent == small_run.root / F.REPORTS_DIR and built.data["run_id"] == run_id
    print(f"report built in {built.seconds:.0f} s, {len(built.html) / 1e6:.1f} MB")
    for section in SECTIONS:
        _section(built.html, section)
    assert 'id="verdict">BLESSED' in built.html
    assert "http://" not in built.html.replace("http://www.w3.org", "") and "https://" not in built.html
    images = re.findall(r'<img id="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', built.html)
    assert {name for name, _ in images} == {"plot-pr-roc", "plot-calibration", "plot-scores"}
    from PIL import Image
    for name, data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 300, name
    for table in ("thresholds", "headline-table", "alert-table", "slice-table", "split-table", "drift-table",
                  "reference-table"):
        assert f'id="{table}"' in built.html, table
    data = built.data
    assert len(data["alert_table"]) >= 3 and any(r["operating"] for r in data["alert_table"])
    assert all(r["pen_caught"] + r["pen_missed"] > 0 for r in data["alert_table"])
    assert {r["name"] for r in data["references"]} == {
        "Logistic regression", "Random forest", "Isolation forest (unsupervised)"} and not data["references_note"]
    assert all(0 <= r["metrics"][F.METRIC_PR_AUC] <= 1 for r in data["references"])
    # each reference at its own budget threshold (one of its valid scores, off TFMA's plot grid): counted exactly
    assert all(r["metrics"].get("recall_at_op") is not None for r in data["references"])
    assert data["references_sample"].startswith("trained on all ")  # the small run is under the sample size
    assert 'id="references-sample"' in built.html
    assert data["anomalies"] == [] and "None: every split" in _section(built.html, "data")
    assert data["drifts"] and all(d["feature"] not in (F.TRANSACTION_ID, F.EVENT_TIME) for d in data["drifts"])
    # every model input has a drift limit; every one over it is listed, and marked in the table
    assert all(d["limit"] is not None for d in data["drifts"] if d["feature"] in F.MODEL_INPUTS)
    assert all(d["over_limit"] == (d["value"] > d["limit"]) for d in data["drifts"] if d["limit"] is not None)
    for d in data["drifts"]:
        assert f'data-feature="{d["feature"]}" data-over="{int(d["over_limit"])}"' in built.html
    assert {s.split("=")[0] for s in (r["slice"] for r in data["slices"])} == set(F.SLICE_COLUMNS)
    op = data["operating_threshold"]
    assert op["split"] == F.SPLIT_VALID and op["split_alerts"] <= op["alerts_per_day_budget"] * op["split_days"]
    if F.NODE_THRESHOLD in nodes:  # wired into the pipeline: the report reads the model's file
        assert data["operating_threshold_source"].endswith(F.THRESHOLD_FILE)
    assert "tfma.load_eval_result(" in _section(built.html, "run")


@pytest.mark.slow
def test_values_match_the_tfma_result(small_run, built):
    import tensorflow_model_analysis as tfma

    from fraud.runs import overall_metrics, summarize

    data, html = built.data, built.html
    candidate, baseline = overall_metrics(data["eval_uri"])
    assert candidate and set(HEADLINE) <= set(candidate)
    for name, value in candidate.items():
        assert data["candidate"][name] == pytest.approx(value, rel=0, abs=1e-12), name
    for name, value in baseline.items():  # empty on the first run of a root
        assert data["baseline"][name] == pytest.approx(value, rel=0, abs=1e-12), name
    headline = _section(html, "headline")
    for name in HEADLINE:
        cells = _cells(headline, "candidate", name)
        assert cells, name
        raw, shown = cells[0]
        assert float(raw) == pytest.approx(candidate[name], abs=1e-12)
        digits = 0 if name == F.METRIC_EXAMPLE_COUNT else 4
        assert shown == f"{candidate[name]:.{digits}f}"
    # The decision table shows TFMA's value against the bound.
    row = next(r for r in data["decision"] if r["metric"] == F.METRIC_PR_AUC and r["kind"] == "value")
    assert row["candidate"] == pytest.approx(candidate[F.METRIC_PR_AUC]) and row["status"] == "passed"
    assert row["margin"] == pytest.approx(candidate[F.METRIC_PR_AUC] - row["bound"])
    # One threshold: TFMA ran its precision/recall and exact matrices at the threshold recorded with the model,
    # and the report's operating-threshold figures are TFMA's there.
    from tensorflow_model_analysis.writers import eval_config_writer

    from fraud.eval_config import operating_thresholds_of

    threshold = data["operating_threshold"]["threshold"]
    stored_config = eval_config_writer.load_eval_run(data["eval_uri"])[0]
    precision_config = next(json.loads(m.config) for m in stored_config.metrics_specs[0].metrics
                            if json.loads(m.config).get("name") == F.METRIC_PRECISION)
    assert precision_config["thresholds"] == [threshold] and threshold in operating_thresholds_of(stored_config)
    assert data["candidate"]["precision_at_op"] == pytest.approx(candidate[F.METRIC_PRECISION], abs=1e-12)
    assert data["candidate"]["recall_at_op"] == pytest.approx(candidate[F.METRIC_RECALL], abs=1e-12)
    exact = None
    for per_slice in tfma.load_metrics(data["eval_uri"]):
        if not per_slice.slice_key.single_slice_keys:
            exact = next(kv.value.confusion_matrix_at_thresholds for kv in per_slice.metric_keys_and_values
                         if kv.key.name == F.METRIC_OPERATING_MATRICES and kv.key.model_name in ("", F.CANDIDATE))
    # TFMA labels the matrices with rounded thresholds but counts at the configured ones, in their order
    at_op = exact.matrices[operating_thresholds_of(stored_config).index(threshold)]
    op_row = next(r for r in data["alert_table"] if r["operating"])
    assert (op_row["tp"], op_row["fp"]) == (at_op.true_positives, at_op.false_positives)
    for r in data["alert_table"]:
        assert r["count_mismatch"] == 0, r
    # Per-slice metrics.
    slices = {r["slice"]: r for r in data["slices"]}
    for per_slice in tfma.load_metrics(data["eval_uri"]):
        keys = per_slice.slice_key.single_slice_keys
        if not keys:
            continue
        value = keys[0].bytes_value.decode() or "(missing)"
        row = slices[f"{keys[0].column}={value}"]
        values = {kv.key.name: kv.value.double_value.value for kv in per_slice.metric_keys_and_values
                  if kv.value.HasField("double_value") and not kv.key.is_diff}
        assert row["examples"] == values[F.METRIC_EXAMPLE_COUNT]
        for metric in (F.METRIC_PR_AUC, F.METRIC_ROC_AUC):
            if row[metric] is None:
                assert math.isnan(values[metric])
            else:
                assert row[metric] == pytest.approx(values[metric], abs=1e-12)
    # Scores recomputed from the SavedModel reproduce TFMA's metrics; the data table matches ML Metadata.
    assert data["recompute_max_diff"] is not None and data["recompute_max_diff"] < 1e-6
    summary = summarize(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    for split, v in summary.splits.items():
        assert (data["splits"][split]["rows"], data["splits"][split]["fraud"]) == (v["rows"], v["fraud"])


@pytest.mark.slow
def test_report_opens_in_headless_chromium(built, tmp_path):
    from PIL import Image

    chromium = require_system_tool("chromium", "chromium")
    png = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot = subprocess.run([chromium, *flags, f"--screenshot={png}", "--window-size=1200,3000", built.path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0, shot.stderr[-2000:]
    page_errors = [line for line in shot.stderr.splitlines()
                   if ":CONSOLE(" in line or "net::ERR" in line or "Failed to load resource" in line]
    assert not page_errors, page_errors
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.03, "the screenshot is (nearly) blank"
    dom = subprocess.run([chromium, *flags, "--dump-dom", built.path.as_uri()], capture_output=True, text=True,
                         timeout=180)
    assert dom.returncode == 0
    for section in SECTIONS:  # Chromium parsed every section
        assert f'<section id="{section}">' in dom.stdout


@pytest.mark.slow
def test_a_run_that_is_not_blessed_says_so_and_names_the_failing_threshold(small_run):
    """The real run re-judged by TFMA's validator with a PR-AUC floor of 0.99 (as `--pr-auc-floor 0.99` would)."""
    from fraud.report import collect, rejudge, render_html

    data = collect(small_run.root, references=False)
    strict = copy.deepcopy(data.evaluation.eval_config)
    for spec in strict.metrics_specs:
        for metric in spec.metrics:
            if json.loads(metric.config).get("name") == F.METRIC_PR_AUC:
                for per_slice in metric.per_slice_thresholds:
                    per_slice.threshold.value_threshold.lower_bound.value = 0.99
    judged = rejudge(data, strict)
    assert judged.blessed is False and not judged.evaluation.validation.validation_ok
    html = render_html(judged)
    verdict = re.search(r'id="verdict">([^<]*)<', html).group(1)
    assert verdict.startswith("NOT BLESSED") and F.METRIC_PR_AUC in verdict
    decision = _section(html, "decision")
    assert re.search(rf'data-threshold="{F.METRIC_PR_AUC}:value" data-status="FAILED"', decision)
    assert f"{F.METRIC_PR_AUC} &gt;= 0.99" in decision
    assert re.search(r'class="FAILED failure">Failed: pr_auc &gt;= 0.99: candidate 0\.\d{4}, margin -0\.\d{4}',
                     decision)
    assert _payload(html)["blessed"] is False and "Pushed as version" not in decision


@pytest.mark.slow
def test_operating_threshold_selector_records_the_threshold_inside_the_model(small_run, tmp_path):
    import shutil

    from tfx.utils import path_utils

    from fraud import examples as X
    from fraud import threshold as T
    from fraud.report import operating_threshold_of
    from fraud.runs import read_run

    _, nodes = read_run(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    trained = nodes[F.NODE_TRAINER].artifact("model")
    examples = nodes[F.NODE_EVALUATOR].artifact("examples", output=False)
    budget = 20.0
    # What the OperatingThresholdSelector does: a copy of the trained serving model, the threshold recorded inside.
    model_dir = tmp_path / "model" / "Format-Serving"  # what the Pusher copies to <serving>/<version>/
    shutil.copytree(path_utils.serving_model_path(trained.uri), model_dir)
    op = T.select_and_record(str(model_dir), examples.uri, alerts_per_day=budget, split=F.SPLIT_VALID,
                             decline_precision=0.5)
    assert (model_dir / F.SAVED_MODEL_FILE).exists() and (model_dir / F.THRESHOLD_FILE).exists()
    assert T.read_threshold(str(model_dir)) == op and op.split == F.SPLIT_VALID
    serialized, frame = X.read_split(examples.uri, F.SPLIT_VALID)
    scores = T.score_serialized(T.load_examples_signature(str(model_dir)), serialized)
    assert op.split_rows == len(scores) and op.split_days == T.split_days(frame[F.EVENT_TIME])
    assert T.flagged(scores, op.threshold).sum() == op.split_alerts <= budget * op.split_days
    lower = _next_lower(scores, op.threshold)
    if lower is not None:  # the lowest such threshold: the next score down breaks the budget
        assert T.flagged(scores, lower).sum() > budget * op.split_days
    # The decline threshold: at or above the operating one; where it is set, the precision target holds there
    # and, at the next score down (still at or above the operating threshold), it did not.
    assert op.decline_threshold >= op.threshold and op.decline_precision_target == 0.5
    labels = frame[F.LABEL].to_numpy()
    if op.decline_precision is not None:
        declined = T.flagged(scores, op.decline_threshold)
        assert declined.sum() == op.split_declines >= T.MIN_DECLINE_ROWS
        assert labels[declined].mean() == pytest.approx(op.decline_precision) and op.decline_precision >= 0.5
        lower = _next_lower(scores, op.decline_threshold)
        if lower is not None and lower >= op.threshold:
            assert labels[T.flagged(scores, lower)].mean() < 0.5
    else:
        assert op.decline_threshold == T.NEVER
    recorded, source = operating_threshold_of(types.SimpleNamespace(uri=str(tmp_path / "model")))
    assert recorded == op and source.endswith(F.THRESHOLD_FILE)


def _reference_inputs(small_run, **kwargs):
    from fraud import examples as X
    from fraud.report import reference_inputs
    from fraud.runs import read_run

    _, nodes = read_run(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    examples = nodes[F.NODE_EVALUATOR].artifact("examples", output=False)
    raw = {s: X.read_split(examples.uri, s) for s in F.SPLITS}
    inputs, why = reference_inputs(nodes, examples.uri, raw[F.SPLIT_EVAL][0], raw[F.SPLIT_VALID][0], **kwargs)
    assert inputs is not None, why
    return nodes, raw, inputs, examples


def _trainer_rows(nodes, examples_uri, split, feature_set):
    """The rows the Trainer reads of a split: trainer_module's dataset (TFXIO over the raw examples, then the
    Transform graph), in stored order."""
    import pandas as pd
    import tensorflow_transform as tft
    from tfx_bsl.public import tfxio

    import trainer_module
    from fraud import examples as X

    output = tft.TFTransformOutput(nodes[F.NODE_TRANSFORM].artifact("transform_graph").uri)
    accessor = types.SimpleNamespace(tf_dataset_factory=lambda files, options, schema: tfxio.TFExampleRecord(
        file_pattern=files, schema=schema).TensorFlowDataset(options))
    columns, labels = trainer_module.load_columns(trainer_module._dataset(
        X.split_files(examples_uri, split), accessor, output, feature_set, batch_size=1024))
    frame = pd.DataFrame({k: v.reshape(-1) for k, v in columns.items()})
    frame[F.LABEL] = labels.reshape(-1)
    return frame


@pytest.mark.slow
def test_reference_models_see_the_features_the_trainer_saw(small_run):
    """The reference models' train and valid rows are the Trainer's own rows (the same raw examples through the same
    Transform graph); eval is the raw eval rows through that graph, in their order (for card precision)."""
    from fraud.report.references import reference_features

    nodes, raw, inputs, examples = _reference_inputs(small_run)
    expected = list(F.dense_transformed_features(inputs.feature_set)) + list(F.CATEGORICAL_TRANSFORMED_FEATURES)
    features, dense, categorical = reference_features(inputs.train, inputs.feature_set)
    assert list(features.columns) == expected and dense + categorical == expected
    assert all(c.endswith("_xf") for c in expected)
    for split, frame in ((F.SPLIT_TRAIN, inputs.train), (F.SPLIT_VALID, inputs.valid)):
        trainer = _trainer_rows(nodes, examples.uri, split, inputs.feature_set)
        assert len(frame) == len(trainer) > 100, split
        for column in expected + [F.LABEL]:
            np.testing.assert_allclose(frame[column].to_numpy(np.float64), trainer[column].to_numpy(np.float64),
                                       rtol=1e-6, atol=1e-6, err_msg=f"{split} {column}")
    assert len(inputs.evals) == len(raw[F.SPLIT_EVAL][1])
    assert (inputs.evals[F.LABEL].to_numpy() == raw[F.SPLIT_EVAL][1][F.LABEL].to_numpy()).all()


@pytest.mark.slow
def test_reference_models_train_on_a_bounded_random_sample_of_train(small_run):
    """Above max_train_rows the reference models see a random sample of the train rows (in their order), and the
    report says so; below it, all of them."""
    nodes, raw, whole, _ = _reference_inputs(small_run, max_train_rows=10**9)
    full = whole.train
    _, _, sampled, _ = _reference_inputs(small_run, max_train_rows=500)
    assert len(sampled.train) == 500 and sampled.train_rows == len(full) > 500
    assert sampled.sample_note.startswith(f"trained on a random 500 of the {len(full):,} train rows")
    # The graph runs on other batches in the two calls, so a float may differ in its last bit: match by nearest row.
    from scipy.spatial import cKDTree

    distance, rows = cKDTree(full.to_numpy(np.float64)).query(sampled.train[full.columns].to_numpy(np.float64))
    assert distance.max() < 1e-4
    assert list(rows) == sorted(rows) and len(set(rows)) == 500  # distinct train rows, in their order
    assert whole.sample_note == f"trained on all {len(full):,} train rows"


@pytest.mark.slow
def test_reference_models_train_in_under_30_seconds_on_50k_rows(small_run, built):
    import dataclasses

    import pandas as pd

    from fraud.report import reference_models
    from fraud.threshold import split_days
    from tensorflow_model_analysis.writers import eval_config_writer

    _, raw, inputs, _ = _reference_inputs(small_run)
    train = inputs.train
    train = pd.concat([train] * math.ceil(50_000 / len(train)), ignore_index=True).iloc[:50_000]
    eval_config = eval_config_writer.load_eval_run(built.data["eval_uri"])[0]
    eval_rows = raw[F.SPLIT_EVAL][1]
    started = time.time()
    refs = reference_models(dataclasses.replace(inputs, train=train), eval_rows, eval_config, 50.0,
                            valid_days=split_days(raw[F.SPLIT_VALID][1][F.EVENT_TIME]),
                            eval_days=split_days(eval_rows[F.EVENT_TIME]))
    seconds = time.time() - started
    print(f"reference models on {len(train)} train rows: {seconds:.1f} s "
          + ", ".join(f"{r.name} {r.seconds:.1f} s" for r in refs))
    assert len(refs) == 3 and seconds < 30
