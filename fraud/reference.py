"""The reference gate: a candidate no better than a simple model is never blessed.

Two fast references are trained on the candidate's train split and inputs (the behavioural examples, before
Transform: the raw values, so no vocabulary cut-off hides a terminal id) and scored on its eval split with the
run's own TFMA metric code (fraud.report.metrics), so their PR-AUC is the number the Evaluator computed for the
candidate, on the same rows:

- logistic regression (F.REFERENCE_LOGISTIC): numeric inputs as signed log, standardised on train (a missing
  value is 0 plus a missing indicator); every categorical value hashed into HASH_BUCKETS one-hot columns of a
  sparse matrix (10,000 terminals cost 10,000 non-zero weights, not a dense 10,001-column array); the Lima hour
  one-hot;
- gradient-boosted trees (F.REFERENCE_BOOSTED, scikit-learn's histogram GBT): numeric inputs as they are (NaN is
  a value the trees route), the hour, each categorical as a native category (its MAX_CATEGORIES most frequent
  train values; the rest share one), and for categoricals with more values than that, each value's share of
  the train rows and its smoothed fraud rate in train (out of fold for the train rows themselves, so a row's own
  label never reaches its input).

The candidate is refused when a reference beats it by more than the tolerance with 95% confidence: the upper
95% bound of (candidate PR-AUC - reference PR-AUC), from a paired bootstrap of the eval rows (BOOTSTRAP_ROUNDS
resamples, average precision of both on each), is below -tolerance. On a large eval split the bound is close to
the measured difference; on a few dozen frauds it is wide, and only a candidate that is clearly worse is refused
(noise alone never blocks a push). A reference that fails (error, no fraud to learn) is recorded with its
reason and the gate refuses: the candidate could not be compared, and an unchecked model is not pushed.
With fewer than MIN_EVAL_FRAUD frauds in the eval split the gate does not judge (one fraud ranked differently
moves a PR-AUC by a tenth, and a bootstrap of a handful of positives understates that): the references are
shown, the candidate passes, and the reason says so.
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from fraud import features as F
from fraud import timeutil

HASH_BUCKETS = 1 << 20
MAX_CATEGORIES = 254  # native categories of the histogram GBT (codes below its 255 bins); rarer values share one
RATE_PRIOR_ROWS = 50  # a value's fraud rate is shrunk towards the overall rate as if it had this many more rows
RATE_FOLDS = 5
BOOTSTRAP_ROUNDS = 200
CONFIDENCE = 0.95
MIN_EVAL_FRAUD = 30  # below this many eval frauds the gate shows the references but does not judge
LOGISTIC_C = 1.0
LOGISTIC_MAX_ITER = 300
# scikit-learn averages the loss over the rows, so one terminal's weight has a gradient of about its share of the
# rows (1e-4 for 10,000 terminals): with the default tolerance (1e-4) lbfgs stops before learning any id.
LOGISTIC_TOL = 1e-8
# The logistic regression fits on at most this many train rows, drawn at random (the encoder still sees them all):
# lbfgs at 1e-8 took 84 s on 872,635 rows, the longest step of the gate, and a linear model's eval PR-AUC has
# settled long before (bench/reference_scale.py). The trees, the reference that binds, see every row.
LOGISTIC_MAX_TRAIN_ROWS = 300_000
BOOSTED_MAX_ITER = 200
_MIX = 0x9E3779B97F4A7C15  # spreads the same value of two categorical features to unrelated buckets


def numeric_inputs(feature_set: str) -> tuple[str, ...]:
    """The numeric model inputs of a feature set (fraud.features.model_inputs without time and categories)."""
    return tuple(k for k in F.model_inputs(feature_set) if F.input_kind(k) == "float")


def columns_needed(feature_set: str) -> tuple[str, ...]:
    """What the references read of a split: their inputs, the label, and the card and time (card precision)."""
    return numeric_inputs(feature_set) + F.CATEGORICAL_FEATURES + (F.EVENT_TIME, F.USER_ID, F.LABEL)


def _signed_log(x):
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Encoder:
    """What the references' inputs need from the train split: scaling, the category codes and frequencies."""
    numeric: tuple
    mean: np.ndarray
    std: np.ndarray
    with_missing: tuple  # numeric inputs with a missing value in train: they get an indicator
    codes: dict  # categorical -> {value: code} of its MAX_CATEGORIES most frequent train values
    shares: dict  # categorical with more values than that -> {value: share of the train rows}
    rates: dict  # the same categoricals -> (train values' codes, per-fold counts and frauds): fraud rate encoding
    prior: float  # the train fraud rate

    @classmethod
    def fit(cls, train: dict, feature_set: str) -> "Encoder":
        import pandas as pd

        numeric = numeric_inputs(feature_set)
        logs = np.column_stack([_signed_log(np.asarray(train[k], np.float64)) for k in numeric])
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(logs, axis=0), np.nanstd(logs, axis=0)
        mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        with_missing = tuple(k for k in numeric if np.isnan(np.asarray(train[k], np.float64)).any())
        codes, shares, rates = {}, {}, {}
        labels = np.asarray(train[F.LABEL], np.int64)
        fold = np.random.default_rng(0).integers(0, RATE_FOLDS, len(labels))
        for k in F.CATEGORICAL_FEATURES:
            counts = pd.Series(train[k]).value_counts()
            counts = counts[counts.index != F.MISSING]
            codes[k] = {v: i for i, v in enumerate(counts.index[:MAX_CATEGORIES].tolist())}
            if len(counts) > MAX_CATEGORIES:
                shares[k] = (counts / len(train[k])).to_dict()
                value_code, uniques = pd.factorize(np.asarray(train[k], dtype=object))
                cell = value_code * RATE_FOLDS + fold
                size = len(uniques) * RATE_FOLDS
                per_fold = (np.bincount(cell, minlength=size).reshape(-1, RATE_FOLDS),
                            np.bincount(cell, weights=labels, minlength=size).reshape(-1, RATE_FOLDS))
                rates[k] = (pd.Index(uniques), value_code, fold, per_fold)
        return cls(numeric, mean, std, with_missing, codes, shares, rates, float(labels.mean()) if len(labels) else 0.0)

    def fraud_rate(self, k: str, values, out_of_fold: bool) -> np.ndarray:
        """The smoothed train fraud rate of each value of categorical k; out_of_fold: the train rows themselves,
        each from the other folds' rows only."""
        index, train_codes, fold, (count, fraud) = self.rates[k]
        m = RATE_PRIOR_ROWS
        if out_of_fold:
            n = count.sum(axis=1)[train_codes] - count[train_codes, fold]
            f = fraud.sum(axis=1)[train_codes] - fraud[train_codes, fold]
        else:
            at = index.get_indexer(np.asarray(values, dtype=object))
            seen = at >= 0
            n, f = np.zeros(len(at)), np.zeros(len(at))
            n[seen], f[seen] = count.sum(axis=1)[at[seen]], fraud.sum(axis=1)[at[seen]]
        return (f + m * self.prior) / (n + m)

    def sparse(self, cols: dict):
        """The logistic regression's inputs: a CSR matrix, the same number of non-zeros in every row."""
        from scipy import sparse
        import pandas as pd

        n = len(cols[F.LABEL])
        z = (np.column_stack([_signed_log(np.asarray(cols[k], np.float64)) for k in self.numeric]) - self.mean) \
            / self.std
        missing = [np.isnan(np.asarray(cols[k], np.float64)).astype(np.float64) for k in self.with_missing]
        dense = np.column_stack([np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)] + [m[:, None] for m in missing])
        width = dense.shape[1]
        hashed = []
        for j, k in enumerate(F.CATEGORICAL_FEATURES):
            h = pd.util.hash_array(np.asarray(cols[k], dtype=object), categorize=True)
            salt = np.uint64((j + 1) * _MIX % (1 << 64))
            hashed.append(((h + salt) % np.uint64(HASH_BUCKETS)).astype(np.int64) + width)  # wraps: on purpose
        hour = width + HASH_BUCKETS + np.asarray(timeutil.lima_hour(np.asarray(cols[F.EVENT_TIME], np.int64)))
        indices = np.column_stack([np.broadcast_to(np.arange(width), (n, width))] + [h[:, None] for h in hashed]
                                  + [hour[:, None]])
        data = np.column_stack([dense, np.ones((n, len(hashed) + 1))])
        per_row = indices.shape[1]
        return sparse.csr_matrix((data.ravel(), indices.ravel(), np.arange(0, n * per_row + 1, per_row)),
                                 shape=(n, width + HASH_BUCKETS + 24))

    def dense(self, cols: dict, out_of_fold: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The boosted trees' inputs and which columns are categories (out_of_fold: `cols` is the train split the
        encoder was fitted on)."""
        import pandas as pd

        parts = [np.asarray(cols[k], np.float64) for k in self.numeric]
        parts.append(np.asarray(timeutil.lima_hour(np.asarray(cols[F.EVENT_TIME], np.int64)), np.float64))
        categorical = [False] * len(parts)
        for k in F.CATEGORICAL_FEATURES:
            values = pd.Series(np.asarray(cols[k], dtype=object))
            code = values.map(self.codes[k]).to_numpy(np.float64)
            code[np.isnan(code) & (values != F.MISSING).to_numpy()] = MAX_CATEGORIES  # a rare or unseen value
            parts.append(code)  # NaN: missing
            categorical.append(True)
            if k in self.shares:
                parts.append(values.map(self.shares[k]).fillna(0.0).to_numpy(np.float64))
                parts.append(self.fraud_rate(k, values.to_numpy(), out_of_fold))
                categorical += [False, False]
        return np.column_stack(parts), np.array(categorical)


@dataclass
class ReferenceResult:
    name: str
    metrics: dict = field(default_factory=dict)  # F.METRIC_* on eval, by the run's TFMA code
    seconds: float = 0.0
    detail: str = ""  # how it was trained
    error: str = ""  # why it failed ("" when it did not)
    difference_upper: float | None = None  # upper CONFIDENCE bound of candidate - this reference (PR-AUC)


@dataclass
class GateResult:
    candidate: dict  # the candidate's overall eval metrics from the Evaluator (F.METRIC_* -> value)
    references: list  # [ReferenceResult]
    tolerance: float
    train_rows: int
    train_fraud: int
    eval_rows: int
    evaluator_blessed: bool
    eval_fraud: int | None = None  # frauds in the eval split (None: not recorded, judged as enough)

    @property
    def judged(self) -> bool:
        """Whether the eval split has enough fraud for the gate to refuse a candidate."""
        return self.eval_fraud is None or self.eval_fraud >= MIN_EVAL_FRAUD

    @property
    def best(self) -> ReferenceResult | None:
        ok = [r for r in self.references if not r.error and F.METRIC_PR_AUC in r.metrics]
        return max(ok, key=lambda r: r.metrics[F.METRIC_PR_AUC]) if ok else None

    @property
    def needed_pr_auc(self) -> float | None:
        return None if self.best is None else self.best.metrics[F.METRIC_PR_AUC] - self.tolerance

    def _beaten_by(self, r: ReferenceResult) -> bool:
        """Whether reference r is better than the candidate by more than the tolerance (with confidence, when
        the bootstrap bound is known; else on the measured values)."""
        difference = self.candidate.get(F.METRIC_PR_AUC, math.nan) - r.metrics.get(F.METRIC_PR_AUC, math.nan)
        upper = r.difference_upper if r.difference_upper is not None else difference
        return not upper >= -self.tolerance  # NaN: not comparable, refused

    @property
    def passed(self) -> bool:
        ok = [r for r in self.references if not r.error]
        if not ok or len(ok) != len(self.references):
            return False
        return not self.judged or not any(self._beaten_by(r) for r in ok)

    @property
    def blessed(self) -> bool:
        return self.evaluator_blessed and self.passed

    @property
    def reason(self) -> str:
        """One sentence: why the gate passed or refused."""
        failed = [r for r in self.references if r.error]
        if failed:
            return ("refused: the candidate could not be compared, the reference " + "; ".join(
                f"{r.name} failed: {r.error}" for r in failed))
        best, candidate = self.best, self.candidate.get(F.METRIC_PR_AUC, math.nan)
        if best is None:
            return "refused: no reference produced a PR-AUC"
        if not self.judged:
            return (f"passed without judging: only {self.eval_fraud} frauds in the eval split (at least "
                    f"{MIN_EVAL_FRAUD} are needed to compare PR-AUCs): the references are shown, not enforced")
        beaten = [r for r in self.references if self._beaten_by(r)]
        r = beaten[0] if beaten else best
        difference = candidate - r.metrics[F.METRIC_PR_AUC]
        judged = f"the difference {difference:+.4f}" if r.difference_upper is None else (
            f"the difference is {difference:+.4f} and its {CONFIDENCE:.0%} upper bound (paired bootstrap of the "
            f"eval rows) {r.difference_upper:+.4f}")
        which = "reference" if beaten else "best reference"
        below = "is below" if beaten else "is not below"
        return (f"{'refused' if beaten else 'passed'}: candidate PR-AUC {candidate:.4f}, {which} {r.name} "
                f"{r.metrics[F.METRIC_PR_AUC]:.4f}; {judged} {below} -{self.tolerance:g} (the tolerance)")

    def to_json(self) -> str:
        out = asdict(self)
        out.update(passed=self.passed, blessed=self.blessed, reason=self.reason, needed_pr_auc=self.needed_pr_auc)
        return json.dumps(out, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "GateResult":
        raw = json.loads(text)
        refs = [ReferenceResult(**r) for r in raw.pop("references")]
        names = set(cls.__dataclass_fields__)
        return cls(references=refs, **{k: v for k, v in raw.items() if k in names and k != "references"})


def sample_rows(cols: dict, limit: int, seed: int) -> dict:
    """At most `limit` rows of a dict of columns, drawn at random without replacement, in their order."""
    n = len(np.asarray(cols[F.LABEL]))
    if n <= limit:
        return cols
    keep = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return {k: (v.iloc[keep].reset_index(drop=True) if hasattr(v, "iloc") else np.asarray(v)[keep])
            for k, v in cols.items()}


def _logistic(encoder: Encoder, train: dict, evals: dict, seed: int):
    from sklearn.linear_model import LogisticRegression

    rows = len(np.asarray(train[F.LABEL]))
    train = sample_rows(train, LOGISTIC_MAX_TRAIN_ROWS, seed)
    fitted = len(np.asarray(train[F.LABEL]))
    x_train = encoder.sparse(train)
    model = LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER, tol=LOGISTIC_TOL, random_state=seed)
    model.fit(x_train, np.asarray(train[F.LABEL]))
    sample = "" if fitted == rows else f"fitted on a random {fitted:,} of the {rows:,} train rows; "
    detail = (f"{sample}L2 (C={LOGISTIC_C:g}), {int(model.n_iter_[0])} lbfgs iterations; "
              f"{len(encoder.numeric)} numeric "
              f"inputs scaled, {len(F.CATEGORICAL_FEATURES)} categoricals hashed into {HASH_BUCKETS:,} sparse "
              f"one-hot columns, the Lima hour one-hot")
    return model.predict_proba(encoder.sparse(evals))[:, 1], detail


def _boosted(encoder: Encoder, train: dict, evals: dict, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    x_train, categorical = encoder.dense(train, out_of_fold=True)
    model = HistGradientBoostingClassifier(
        max_iter=BOOSTED_MAX_ITER, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        categorical_features=categorical, early_stopping=True, validation_fraction=0.1, n_iter_no_change=15,
        random_state=seed)
    model.fit(x_train, np.asarray(train[F.LABEL]))
    wide = ", ".join(f"{k} ({len(encoder.shares[k]):,} values)" for k in encoder.shares) or "none"
    detail = (f"{model.n_iter_} trees of at most 31 leaves (early stopping on 10% of train); categoricals native "
              f"(top {MAX_CATEGORIES} values each), with each value's share of the rows and out-of-fold fraud rate "
              f"for the wider ones: {wide}")
    return model.predict_proba(encoder.dense(evals)[0])[:, 1], detail


_TRAINERS = {F.REFERENCE_LOGISTIC: _logistic, F.REFERENCE_BOOSTED: _boosted}


def difference_upper(labels, candidate, reference, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                     confidence: float = CONFIDENCE) -> float | None:
    """The upper `confidence` bound of AP(candidate) - AP(reference) on the same rows, by a paired bootstrap of
    the rows (None without fraud)."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels)
    candidate, reference = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    rng, n, diffs = np.random.default_rng(seed), len(labels), []
    for _ in range(rounds):
        rows = rng.integers(0, n, n)
        y = labels[rows]
        if 0 < y.sum() < n:
            diffs.append(average_precision_score(y, candidate[rows]) - average_precision_score(y, reference[rows]))
    return float(np.quantile(diffs, confidence)) if diffs else None


def run_references(train: dict, evals: dict, eval_config, *, feature_set: str, seed: int = 0,
                   names=F.REFERENCES, progress=print, candidate_scores=None) -> list[ReferenceResult]:
    """Train each reference on `train`, score `evals` (columns as fraud.examples.read_columns gives them) and
    measure it with the run's TFMA metrics; with the candidate's scores of the same eval rows, also the bound of
    the difference (difference_upper). A reference that fails is returned with its error, never raised."""
    import pandas as pd

    from fraud.report.metrics import tfma_metrics_from_scores

    labels = np.asarray(evals[F.LABEL])
    card_and_day = pd.DataFrame({F.USER_ID: evals[F.USER_ID], F.EVENT_TIME: evals[F.EVENT_TIME]})
    out = []
    try:
        if int(np.asarray(train[F.LABEL]).sum()) == 0:
            raise ValueError("the train split has no fraud to learn from")
        encoder = Encoder.fit(train, feature_set)
    except Exception as exc:  # every reference fails the same way: each says so
        return [ReferenceResult(name, error=f"{type(exc).__name__}: {exc}") for name in names]
    def train_and_score(name):
        started = time.time()
        scores, detail = _TRAINERS[name](encoder, train, evals, seed)
        return scores, detail, time.time() - started

    # The references train at the same time, in threads: the logistic regression's lbfgs runs on one core while
    # the trees' OpenMP loops take the rest (both release the GIL in their numeric code); threads, not
    # processes, so the gate also runs inside daemonic workers (Airflow's Celery tasks).
    with ThreadPoolExecutor(max_workers=len(names) or 1, thread_name_prefix="reference") as pool:
        futures = {name: pool.submit(train_and_score, name) for name in names}
    for name in names:
        started = time.time()
        try:
            scores, detail, trained = futures[name].result()
            metrics, _ = tfma_metrics_from_scores(labels, scores, eval_config, card_and_day)
            result = ReferenceResult(name, {k: float(v) for k, v in metrics.items()
                                            if isinstance(v, (int, float, np.floating))},
                                     trained + time.time() - started, detail)
            if candidate_scores is not None:
                result.difference_upper = difference_upper(labels, candidate_scores, scores, seed=seed)
            progress(f"reference {name}: eval PR-AUC {result.metrics.get(F.METRIC_PR_AUC, math.nan):.4f}, "
                     f"ROC-AUC {result.metrics.get(F.METRIC_ROC_AUC, math.nan):.4f} ({result.seconds:.1f} s, "
                     "trained alongside the others)")
        except Exception as exc:  # recorded, shown by the report, and the gate refuses
            result = ReferenceResult(name, seconds=time.time() - started, error=f"{type(exc).__name__}: {exc}")
            progress(f"reference {name} FAILED: {result.error}")
        out.append(result)
    return out


def read_result(gate_uri: str) -> GateResult:
    import os

    with open(os.path.join(gate_uri, F.REFERENCE_FILE)) as f:
        return GateResult.from_json(f.read())
