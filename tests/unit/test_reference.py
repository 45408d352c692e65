"""The reference gate (fraud.reference): its verdicts, its sparse encoding of wide categoricals, and the
references on 10,000 terminal ids and a million rows (bench/reference_scale.py, slow)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from fraud import reference as R
from tests.helpers import REPO


def _gate(candidate_pr_auc, refs, *, tolerance=0.05, evaluator_blessed=True, upper=None):
    references = [R.ReferenceResult(name, {F.METRIC_PR_AUC: pr} if pr is not None else {}, 1.0,
                                    error="" if pr is not None else "MemoryError: too big",
                                    difference_upper=None if upper is None else upper.get(name))
                  for name, pr in refs]
    return R.GateResult({F.METRIC_PR_AUC: candidate_pr_auc}, references, tolerance, 1000, 10, 200,
                        evaluator_blessed)


def test_the_gate_blesses_only_a_candidate_within_the_tolerance_of_the_best_reference():
    refs = [(F.REFERENCE_LOGISTIC, 0.70), (F.REFERENCE_BOOSTED, 0.90)]
    ok = _gate(0.86, refs)  # no bootstrap bound: the measured difference decides
    assert ok.best.name == F.REFERENCE_BOOSTED and math.isclose(ok.needed_pr_auc, 0.85)
    assert ok.passed and ok.blessed
    assert ok.reason == ("passed: candidate PR-AUC 0.8600, best reference gradient_boosted_trees 0.9000; the "
                         "difference -0.0400 is not below -0.05 (the tolerance)")
    worse = _gate(0.84, refs)
    assert not worse.passed and not worse.blessed
    # the Evaluator's refusal stands whatever the references say
    assert _gate(0.99, [(F.REFERENCE_BOOSTED, 0.5)], evaluator_blessed=False).blessed is False


def test_the_gate_refuses_only_what_the_bootstrap_bound_confirms():
    refs = [(F.REFERENCE_LOGISTIC, 0.70), (F.REFERENCE_BOOSTED, 0.90)]
    # 0.06 below the best, but a few dozen frauds: the candidate may be as good (upper bound +0.02): passed
    noisy = _gate(0.84, refs, upper={F.REFERENCE_LOGISTIC: 0.3, F.REFERENCE_BOOSTED: 0.02})
    assert noisy.passed
    assert noisy.reason == ("passed: candidate PR-AUC 0.8400, best reference gradient_boosted_trees 0.9000; the "
                            "difference is -0.0600 and its 95% upper bound (paired bootstrap of the eval rows) +0.0200 "
                            "is not below -0.05 (the tolerance)")
    sure = _gate(0.84, refs, upper={F.REFERENCE_LOGISTIC: 0.3, F.REFERENCE_BOOSTED: -0.051})
    assert not sure.passed
    assert sure.reason == ("refused: candidate PR-AUC 0.8400, reference gradient_boosted_trees 0.9000; the "
                           "difference is -0.0600 and its 95% upper bound (paired bootstrap of the eval rows) -0.0510 "
                           "is below -0.05 (the tolerance)")


def test_on_a_handful_of_eval_frauds_the_gate_shows_the_references_but_does_not_judge():
    refs = [(F.REFERENCE_LOGISTIC, 0.70), (F.REFERENCE_BOOSTED, 0.90)]
    few = _gate(0.2, refs, upper={F.REFERENCE_LOGISTIC: -0.3, F.REFERENCE_BOOSTED: -0.5})
    few.eval_fraud = R.MIN_EVAL_FRAUD - 1
    assert few.passed and few.blessed and not few.judged
    assert few.reason == (f"passed without judging: only {R.MIN_EVAL_FRAUD - 1} frauds in the eval split (at least "
                          f"{R.MIN_EVAL_FRAUD} are needed to compare PR-AUCs): the references are shown, not enforced")
    few.eval_fraud = R.MIN_EVAL_FRAUD
    assert not few.passed and few.judged
    failed = _gate(0.99, [(F.REFERENCE_BOOSTED, None)])
    failed.eval_fraud = 3
    assert not failed.passed  # a reference that failed still refuses: nothing was compared


def test_the_bootstrap_bound_is_tight_on_many_frauds_and_wide_on_few():
    rng = np.random.default_rng(3)

    def bound(frauds):
        labels = np.r_[np.ones(frauds), np.zeros(20 * frauds)]
        good = labels * 1.0 + rng.normal(0, 0.6, len(labels))
        worse = labels * 0.6 + rng.normal(0, 0.6, len(labels))
        return R.difference_upper(labels, worse, good, rounds=200), labels, worse, good

    from sklearn.metrics import average_precision_score as ap

    many, labels, worse, good = bound(2000)
    measured = ap(labels, worse) - ap(labels, good)
    assert measured < -0.1 and measured < many < measured + 0.04  # close above the measured difference
    few = bound(8)[0]
    assert few > many + 0.1  # eight frauds: much wider
    assert R.difference_upper(np.zeros(50), np.ones(50), np.ones(50)) is None  # no fraud: no bound


def test_a_failed_reference_refuses_the_candidate_and_says_why():
    g = _gate(0.99, [(F.REFERENCE_LOGISTIC, 0.5), (F.REFERENCE_BOOSTED, None)])
    assert not g.passed and not g.blessed
    assert g.reason == ("refused: the candidate could not be compared, the reference gradient_boosted_trees "
                        "failed: MemoryError: too big")


def test_the_result_survives_its_json():
    g = _gate(0.86, [(F.REFERENCE_LOGISTIC, 0.70), (F.REFERENCE_BOOSTED, None)])
    back = R.GateResult.from_json(g.to_json())
    assert back == g and back.reason == g.reason
    assert json.loads(g.to_json())["blessed"] is False


def _columns(rows, restaurants, seed=0):
    rng = np.random.default_rng(seed)
    cols = {k: rng.random(rows) for k in R.numeric_inputs(F.FEATURE_SET_BEHAVIOURAL)}
    cols[F.USER_AGE][::7] = np.nan
    for k in F.CATEGORICAL_FEATURES:
        cols[k] = np.array(["x", "y", F.MISSING], dtype=object)[rng.integers(0, 3, rows)]
    cols[F.RESTAURANT_ID] = np.array([f"T{i}" for i in rng.integers(0, restaurants, rows)], dtype=object)
    cols[F.EVENT_TIME] = np.arange(rows, dtype=np.int64) * 60 + 1_780_000_000
    cols[F.LABEL] = (rng.random(rows) < 0.05).astype(np.int64)
    return cols


def test_ten_thousand_terminal_ids_cost_one_sparse_column_each_not_a_dense_one_hot():
    train = _columns(50_000, 10_000)
    enc = R.Encoder.fit(train, F.FEATURE_SET_BEHAVIOURAL)
    x = enc.sparse(train)
    width = len(enc.numeric) + len(enc.with_missing)
    assert enc.with_missing == (F.USER_AGE,)
    assert x.shape == (50_000, width + R.HASH_BUCKETS + 24)
    assert (np.diff(x.indptr) == width + len(F.CATEGORICAL_FEATURES) + 1).all()  # same non-zeros in every row
    assert x.data.nbytes + x.indices.nbytes < 50 * 2**20
    ids = x[:, width:width + R.HASH_BUCKETS].nnz
    assert ids == 50_000 * len(F.CATEGORICAL_FEATURES)
    # the same terminal lands in the same column, two different ones (almost always) not
    terminal = F.CATEGORICAL_FEATURES.index(F.RESTAURANT_ID)
    column = x.indices.reshape(50_000, -1)[:, width + terminal]
    same = train[F.RESTAURANT_ID] == train[F.RESTAURANT_ID][0]
    assert (column[same] == column[0]).all() and (column[~same] != column[0]).mean() > 0.99
    dense, categorical = enc.dense(train, out_of_fold=True)
    # the wide categorical gets its share and an out-of-fold fraud rate; it never sees its own row's label
    assert dense.shape[1] == len(categorical) == len(enc.numeric) + 1 + len(F.CATEGORICAL_FEATURES) + 2
    rates = dense[:, -1]
    assert np.isfinite(rates).all() and 0 < rates.min() and rates.max() < 0.5


@pytest.mark.slow
def test_the_references_run_on_ten_thousand_terminals_and_a_million_rows_within_memory():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "reference_scale.py"), "--rows", "1000000",
                           "--eval-rows", "50000", "--restaurants", "10000", "--json"], capture_output=True,
                          text=True, timeout=1500, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["peak_rss_gib"] < 8, out
    for name in F.REFERENCES:
        r = out["references"][name]
        assert not r["error"], r
        # each learns the compromised terminals from their ids: well above the amount-only model
        assert r["pr_auc"] > 2 * out["amount_only"]["pr_auc"], out
        assert r["roc_auc"] > out["amount_only"]["roc_auc"] + 0.03, out


def test_the_logistic_reference_fits_on_a_bounded_random_sample_in_row_order():
    import pandas as pd

    from fraud.reference import sample_rows

    cols = {F.LABEL: np.arange(1000) % 2, F.USER_ID: pd.Series([f"U{i}" for i in range(1000)])}
    assert sample_rows(cols, 1000, seed=1) is cols  # under the limit: every row, untouched
    sample = sample_rows(cols, 300, seed=1)
    ids = [int(u[1:]) for u in sample[F.USER_ID]]
    assert len(ids) == len(set(ids)) == 300 and ids == sorted(ids)  # without replacement, in row order
    assert (sample[F.LABEL] == np.array(ids) % 2).all()  # the columns stay row for row
    assert sample_rows(cols, 300, seed=1)[F.USER_ID].tolist() == sample[F.USER_ID].tolist()  # deterministic


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_references_trained_side_by_side_score_as_each_trained_alone(monkeypatch):
    """run_references trains the references in threads at the same time; each must score exactly as when it is
    trained alone (no shared state between them). Few iterations: the test is about sameness, not quality."""
    monkeypatch.setattr(R, "LOGISTIC_MAX_ITER", 25)
    monkeypatch.setattr(R, "BOOSTED_MAX_ITER", 25)
    from fraud.eval_config import build_eval_config
    from fraud.report.metrics import tfma_metrics_from_scores

    train, evals = _columns(5_000, 200, seed=1), _columns(1_500, 200, seed=2)
    evals[F.USER_ID] = np.array([f"U{i % 150}" for i in range(1_500)], dtype=object)
    train[F.USER_ID] = np.array([f"U{i % 150}" for i in range(5_000)], dtype=object)
    config = build_eval_config(pr_auc_floor=0.2, regression_tolerance=0.02)
    together = {r.name: r for r in R.run_references(train, evals, config, feature_set=F.FEATURE_SET_BEHAVIOURAL,
                                                     seed=3, progress=lambda line: None)}
    encoder = R.Encoder.fit(train, F.FEATURE_SET_BEHAVIOURAL)
    frame = pd.DataFrame({F.USER_ID: evals[F.USER_ID], F.EVENT_TIME: evals[F.EVENT_TIME]})
    for name in F.REFERENCES:
        assert not together[name].error, together[name].error
        scores, _ = R._TRAINERS[name](encoder, train, evals, 3)
        alone, _ = tfma_metrics_from_scores(evals[F.LABEL], scores, config, frame)
        assert together[name].metrics[F.METRIC_PR_AUC] == alone[F.METRIC_PR_AUC]
        assert together[name].metrics[F.METRIC_ROC_AUC] == alone[F.METRIC_ROC_AUC]
