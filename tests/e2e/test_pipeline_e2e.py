"""The real pipeline (LocalDagRunner, Beam DirectRunner) on small data: artifacts, push, gates."""
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
import tensorflow_model_analysis as tfma

from fraud import features as F
from fraud.runs import summarize
from fraud.features import COMPONENT_IDS
from tests.helpers import generate, run_fraudctl, run_pipeline

pytestmark = pytest.mark.slow


def test_every_component_ran_and_a_blessed_model_was_pushed(small_run):
    summary = summarize(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    states = {c.node_id: c.state for c in summary.components}
    assert set(states) == set(COMPONENT_IDS)
    assert all(state == "COMPLETE" for state in states.values()), states
    assert summary.blessed is True and summary.pushed is True
    versions = small_run.versions()
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").exists()
    assert str(versions[0]) == summary.pushed_path.rstrip("/")
    assert summary.anomaly_count == 0
    assert summary.candidate[F.METRIC_PR_AUC] > 0.2  # well above the fraud rate (~1%)
    assert "Blessed: YES" in small_run.output and f"version {versions[0].name}" in small_run.output


def test_time_split_has_no_overlap(small_run):
    summary = summarize(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    gen = summary.component("FraudExampleGen").outputs["Examples"][0]
    props = {k: v.int_value for k, v in gen.custom_properties.items() if v.HasField("int_value")}
    assert props["end_train"] < props["start_valid"] <= props["end_valid"] < props["start_eval"]
    assert sum(props[F.prop_rows(s)] for s in F.SPLITS) == props[F.PROP_ROWS_IN]


def test_tfma_result_loads_with_slices(small_run):
    summary = summarize(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    # With no baseline yet (first run) TFMA stores one unnamed model.
    result = tfma.load_eval_result(summary.eval_uri)
    slices = {tuple(k for k, _ in slice_key) for slice_key, _ in result.slicing_metrics}
    assert () in slices
    for column in F.SLICE_COLUMNS:
        assert (column,) in slices, f"no slices by {column}"


def test_pushed_model_signatures_answer(small_run):
    model = tf.saved_model.load(str(small_run.versions()[-1]))
    assert {F.SERVING_SIGNATURE, F.EXAMPLES_SIGNATURE, F.CLASSIFY_SIGNATURE} <= set(model.signatures)
    raw = model.signatures[F.SERVING_SIGNATURE]
    inputs = {name: spec for name, spec in raw.structured_input_signature[1].items()}
    assert set(inputs) == set(F.MODEL_INPUTS)
    row = {k: {"float": [0.0], "int": [1780355707], "string": [""]}[F.input_kind(k)] for k in F.MODEL_INPUTS}
    row.update({F.AMOUNT: [150.25], F.USER_AGE: [float("nan")], F.CITY: ["Lima"]})
    score = raw(**{k: tf.constant(v, dtype=inputs[k].dtype) for k, v in row.items()})[F.SCORE_OUTPUT].numpy()
    assert score.shape == (1,) and 0.0 <= score[0] <= 1.0


_FLOAT_INPUTS = [k for k in F.MODEL_INPUTS if F.input_kind(k) == "float"]
_ANY_FLOAT = st.one_of(st.floats(width=32), st.sampled_from([-5.0, -1.0, 1e38, -1e38, float("inf"),
                                                             float("-inf"), float("nan"), 0.0]))


@pytest.fixture(scope="module")
def serving_signature(small_run):
    model = tf.saved_model.load(str(small_run.versions()[-1]))
    return model, model.signatures[F.SERVING_SIGNATURE]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({k: st.lists(_ANY_FLOAT, min_size=4, max_size=4) for k in _FLOAT_INPUTS}))
def test_any_numbers_a_client_sends_give_a_probability(serving_signature, values):
    """NaN, +-Infinity, negative and absurd amounts, ages and behavioural values: every score is finite and in
    [0, 1] (imputed as documented), never NaN, which would never raise an alert."""
    _, raw = serving_signature
    specs = raw.structured_input_signature[1]
    row = {k: {"int": 1780355707, "string": "Lima"}[F.input_kind(k)] for k in F.MODEL_INPUTS
           if F.input_kind(k) != "float"}
    batch = {k: tf.constant([v] * 4, dtype=specs[k].dtype) for k, v in row.items()}
    batch.update({k: tf.constant(v, dtype=specs[k].dtype) for k, v in values.items()})
    score = raw(**batch)[F.SCORE_OUTPUT].numpy()
    assert score.shape == (4,) and np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all(), (score, values)


def test_infinity_is_imputed_like_a_missing_value_and_a_negative_amount_counts_as_zero(serving_signature):
    _, raw = serving_signature
    specs = raw.structured_input_signature[1]
    base = {k: {"float": 0.0, "int": 1780355707, "string": "Lima"}[F.input_kind(k)] for k in specs}
    base.update({F.AMOUNT: 150.0, F.USER_AGE: 40.0})
    changes = [{F.AMOUNT: float("nan")}, {F.AMOUNT: float("inf")}, {F.AMOUNT: -float("inf")},
               {F.AMOUNT: 0.0}, {F.AMOUNT: -5.0}, {F.USER_AGE: float("nan")}, {F.USER_AGE: float("inf")}]
    rows = [{**base, **change} for change in changes]
    batch = {k: tf.constant([r[k] for r in rows], dtype=specs[k].dtype) for k in specs}
    nan_amount, inf_amount, minus_inf, zero, negative, nan_age, inf_age = raw(**batch)[F.SCORE_OUTPUT].numpy()
    assert inf_amount == pytest.approx(nan_amount) and minus_inf == pytest.approx(nan_amount)
    assert negative == pytest.approx(zero)
    assert inf_age == pytest.approx(nan_age)


def test_score_cli_matches_the_model(small_run, tmp_path):
    csv = sorted(small_run.data_dir.glob("*.csv"))[-1]
    out = tmp_path / "scores.csv"
    proc = run_fraudctl("score", "--model", small_run.model_base, "--input", csv, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "Unable to register" not in proc.stderr  # no CUDA plugin chatter on a machine without a GPU
    scores = pd.read_csv(out)
    source = pd.read_csv(csv)
    assert list(scores.columns) == [F.TRANSACTION_ID, "score"]
    assert len(scores) == len(source) and set(scores[F.TRANSACTION_ID]) == set(source[F.TRANSACTION_ID])
    assert scores["score"].between(0, 1).all()
    assert (scores["score"] > 0).all()  # written with enough digits: no small score prints as 0
    merged = scores.merge(source[[F.TRANSACTION_ID, F.LABEL]], on=F.TRANSACTION_ID)
    # The model ranks fraud above legitimate rows on average.
    assert merged.loc[merged[F.LABEL] == 1, "score"].mean() > 5 * merged.loc[merged[F.LABEL] == 0, "score"].mean()


def test_validation_gate_stops_bad_data_before_training(tmp_path):
    data = generate(tmp_path / "data")
    last = sorted(data.glob("*.csv"))[-1]
    frame = pd.read_csv(last, dtype=str, keep_default_na=False)
    frame.loc[frame.index[::3], F.PAYMENT_METHOD] = "bitcoin"  # a third of a month: outside the domain
    frame.to_csv(last, index=False)
    run = run_pipeline(data, tmp_path / "root", tmp_path / "serving")
    assert run.exit_code == 4, run.output[-3000:]
    assert "DataValidationGate" in run.output and "payment_method" in run.output
    summary = summarize(str(run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    ran = {c.node_id for c in summary.components}
    assert "Transform" not in ran and "Trainer" not in ran and "Pusher" not in ran
    assert not run.serving_dir.exists() or not any(run.serving_dir.rglob("saved_model.pb"))


def test_regression_gate_keeps_a_worse_model_out(small_run, tmp_path):
    """Second run on the same root with training labels scrambled (eval labels intact): the candidate is
    worse than the blessed baseline on the same eval split. With the PR-AUC floor at 0 only the
    regression threshold can refuse it: nothing is pushed and the summary names that threshold."""
    from fraud.ingest import parse_timestamps

    data = tmp_path / "data"
    shutil.copytree(small_run.data_dir, data)
    frames = {p: pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(data.glob("*.csv"))}
    last_time = max(parse_timestamps(f[F.TIMESTAMP]).max() for f in frames.values())
    for path, frame in frames.items():
        before_eval = (parse_timestamps(frame[F.TIMESTAMP]) < last_time - 10 * 86400).to_numpy()
        labels = frame.loc[before_eval, F.LABEL]
        frame.loc[before_eval, F.LABEL] = labels.sample(frac=1.0, random_state=3).to_numpy()
        frame.to_csv(path, index=False)
    root, serving = tmp_path / "root", tmp_path / "serving"
    shutil.copytree(small_run.root, root)
    shutil.copytree(small_run.serving_dir, serving)
    before = sorted(p.name for p in (serving / F.MODEL_NAME).iterdir())
    run = run_pipeline(data, root, serving, "--pr-auc-floor", "0", "--min-valid-roc-auc", "0")
    assert run.exit_code == 3, run.output[-3000:]
    assert "Blessed: NO" in run.output
    assert "failed: pr_auc (change vs baseline, overall)" in run.output, run.output[-3000:]
    assert sorted(p.name for p in (serving / F.MODEL_NAME).iterdir()) == before


def test_beam_behaviour_component_matches_the_shared_definition(small_run):
    """The Beam job (grouped by entity) writes exactly fraud.behaviour's values, and eval rows see the
    train period's history (the boundary uses earlier splits)."""
    import glob
    import math
    import os

    from fraud import behaviour, ingest

    summary = summarize(str(small_run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    augmented = summary.component("BehaviouralFeatures").outputs["Examples"][0]
    expected = behaviour.compute_offline(behaviour.events_from_frame(
        ingest.standardise(ingest.read_csv_dir(small_run.data_dir), require_label=True).frame))
    seen, eval_with_history = 0, 0
    for split in F.SPLITS:
        files = glob.glob(os.path.join(F.split_dir(augmented.uri, split), "*.gz"))
        assert files, split
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            f = example.features.feature
            tid = f[F.TRANSACTION_ID].bytes_list.value[0].decode()
            for name in F.BEHAVIOUR_FEATURES:
                assert math.isclose(f[name].float_list.value[0], expected[tid][name], rel_tol=1e-5, abs_tol=1e-4), \
                    (tid, name)
            seen += 1
            if split == F.SPLIT_EVAL and f["user_txn_count_30d"].float_list.value[0] > 0:
                eval_with_history += 1
    assert seen == len(expected)
    assert eval_with_history > 0


def test_score_from_date_uses_earlier_rows_as_history(small_run, tmp_path):
    files = sorted(small_run.data_dir.glob("*.csv"))
    frame = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in files])
    csv = tmp_path / "all.csv"
    frame.to_csv(csv, index=False)
    full, tail = tmp_path / "full.csv", tmp_path / "tail.csv"
    assert run_fraudctl("score", "--model", small_run.model_base, "--input", csv, "--output", full).returncode == 0
    proc = run_fraudctl("score", "--model", small_run.model_base, "--input", csv, "--output", tail,
                        "--from", "2026-07-01")
    assert proc.returncode == 0, proc.stderr
    full_scores, tail_scores = pd.read_csv(full), pd.read_csv(tail)
    assert 0 < len(tail_scores) < len(full_scores)
    # Same history, same features, same scores for the rows both scored.
    merged = tail_scores.merge(full_scores, on=F.TRANSACTION_ID, suffixes=("_tail", "_full"))
    assert len(merged) == len(tail_scores)
    assert (merged["score_tail"] - merged["score_full"]).abs().max() < 1e-5
    bad = run_fraudctl("score", "--model", small_run.model_base, "--input", csv, "--output", tmp_path / "x.csv",
                       "--from", "2099-01-01")
    assert bad.returncode != 0 and "no transactions on or after" in bad.stderr


def test_a_backtest_of_the_eval_split_reproduces_the_evaluators_metrics(small_run, tmp_path):
    """`fraudctl score` on the whole data (labels included, as history) gives the eval rows the scores the
    Evaluator saw: TFMA's own metric code on the backtest's scores gives the stored metrics."""
    from fraud import ingest
    from fraud.report.metrics import load_evaluation, tfma_metrics_from_scores
    from fraud.runs import props, read_run

    metadata = str(small_run.root / F.METADATA_FILE)
    summary = summarize(metadata, F.PIPELINE_NAME)
    _, nodes = read_run(metadata, F.PIPELINE_NAME)
    eval_start = int(props(nodes[F.NODE_EXAMPLE_GEN].artifact("examples"))[F.prop_start(F.SPLIT_EVAL)])
    raw = ingest.read_csv_dir(small_run.data_dir)
    csv, out = tmp_path / "all.csv", tmp_path / "scores.csv"
    raw.to_csv(csv, index=False)
    proc = run_fraudctl("score", "--model", small_run.model_base, "--input", csv, "--output", out)
    assert proc.returncode == 0, proc.stderr
    standard = ingest.standardise(raw, require_label=True).frame
    scored = pd.read_csv(out, dtype={F.TRANSACTION_ID: str}).merge(standard, on=F.TRANSACTION_ID)
    eval_rows = scored[scored[F.EVENT_TIME] >= eval_start].reset_index(drop=True)
    assert len(eval_rows) == summary.splits[F.SPLIT_EVAL]["rows"]
    config = load_evaluation(summary.eval_uri).eval_config
    metrics, _ = tfma_metrics_from_scores(eval_rows[F.LABEL], eval_rows["score"], config, eval_rows)
    # The CSV holds every float32 score exactly (9 significant digits), so TFMA's metrics agree to 1e-6; without
    # the input's labels the delayed fraud rate was 0 in every row and ROC-AUC differed by ~1e-2.
    for name in (F.METRIC_ROC_AUC, F.METRIC_PR_AUC, F.METRIC_MEAN_PREDICTION):
        assert abs(metrics[name] - summary.candidate[name]) < 1e-6, (name, metrics[name], summary.candidate[name])


def test_required_columns_only_train_and_push_a_model(tmp_path):
    """Data that holds the contract's required columns and the label, nothing else (no restaurant, device, city,
    currency or guest profile): absent optional columns are imputed, pass validation (an all-missing user_age is
    not out of range) and a model is trained on amount, time and the card's history, then pushed."""
    data = generate(tmp_path / "full")
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in sorted(data.glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame[list(F.TRAINING_REQUIRED_COLUMNS)].to_csv(bare / path.name, index=False)
    run = run_pipeline(bare, tmp_path / "root", tmp_path / "serving", "--pr-auc-floor", "0.05")
    assert run.exit_code == 0, run.output[-4000:]
    assert f"{F.USER_AGE}: missing in every row" in run.output
    assert len(run.versions()) == 1


def test_an_export_with_hot_keys_a_bom_no_device_columns_and_empty_optional_ones_trains_and_pushes(tmp_path):
    """Shapes of real exports in one run: a restaurant taking 30% of all rows, one card with 6% of them, no
    device columns at all, every other optional column present but empty in every row (city, currency, guest
    profile...), a UTF-8 byte-order mark in one file, the generator's mixed timestamp formats. Every row comes out
    of BehaviouralFeatures exactly once (the component checks it), the hot restaurant's history is counted, the
    all-empty user_age passes validation, and a model is pushed. (Required columns plus restaurant_id only, a
    terminal export, is tests/e2e/test_reference_gate.py's data.)"""
    import numpy as np

    from fraud import examples as X

    data = generate(tmp_path / "full")
    shaped = tmp_path / "shaped"
    shaped.mkdir()
    rng = np.random.default_rng(5)
    device_columns = [F.DEVICE_ID, F.DEVICE_TYPE, F.OS_VERSION]
    emptied = [c for c in F.OPTIONAL_STRING_COLUMNS + F.OPTIONAL_NUMERIC_COLUMNS
               if c not in device_columns and c != F.RESTAURANT_ID]
    for i, path in enumerate(sorted(data.glob("*.csv"))):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.loc[rng.random(len(frame)) < 0.30, F.RESTAURANT_ID] = "R-HOT"
        frame.loc[rng.random(len(frame)) < 0.06, F.USER_ID] = "U-HOT"
        frame = frame.drop(columns=device_columns)
        for column in emptied:
            frame[column] = ""
        text = frame.to_csv(index=False)
        (shaped / path.name).write_bytes(("\ufeff" if i == 0 else "").encode() + text.encode())
    run = run_pipeline(shaped, tmp_path / "root", tmp_path / "serving", "--pr-auc-floor", "0.05")
    assert run.exit_code == 0, run.output[-4000:]
    assert len(run.versions()) == 1
    assert f"{F.USER_AGE}: missing in every row" in run.output
    summary = summarize(str(run.root / F.METADATA_FILE), F.PIPELINE_NAME)
    behaviour = next(c for c in summary.components if c.node_id == F.NODE_BEHAVIOUR)
    (artifact,) = behaviour.outputs["Examples"]
    rows = {}
    for split in F.SPLITS:
        frame = X.read_split(artifact.uri, split)[1]
        rows[split] = len(frame)
        if split == F.SPLIT_EVAL:
            hot = frame[frame[F.RESTAURANT_ID] == "R-HOT"]
            assert hot["restaurant_txn_count_1d"].median() > 20, "the hot restaurant's day is counted"
            assert (frame["device_distinct_users_30d"] == 0).all()  # no device: cold start, not one giant device
            assert (frame["user_distinct_cities_1d"] == 0).all()  # no city: no entity either
    assert rows == {s: v["rows"] for s, v in summary.splits.items()}
