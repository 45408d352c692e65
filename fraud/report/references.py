"""Reference models: what simple scikit-learn models achieve on the same rows AND the same features as the
candidate, so the gap to the candidate is what the deep model adds, not a difference in inputs.

The features are the run's Transform graph applied to its raw examples, never re-derived here: the dense `*_xf`
floats (already imputed and scaled by Transform) as they are, and the categorical `*_xf` vocabulary ids one-hot
encoded (the Keras model embeds them; one-hot is the linear equivalent). The Trainer reads the same examples
through the same graph (Transform does not write transformed copies), and so does the candidate's
`serving_examples` signature inside TFMA:
- train: the train split (a random sample of at most MAX_TRAIN_ROWS);
- valid: the valid split, for the alert-budget threshold (only the scores matter there);
- eval: the eval split in its stored order, the Evaluator's rows, so each scored row keeps its card and day
  (TFMA's card precision needs them).
Each model is scored on eval with the run's TFMA metric code (fraud.report.metrics).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from fraud import features as F
from fraud.report.metrics import tfma_metrics_from_scores
from fraud.report.model import (FOREST, ISOLATION, LOGISTIC, OP_ALERTS_PER_DAY, OP_PRECISION, OP_RECALL,
                                Reference, exact_point)

_PARSE_CHUNK = 16384
# The reference models train on at most this many train rows, drawn at random: their figures settle long before
# (they are a yardstick, not the model), and at a million rows the forest alone would take minutes.
MAX_TRAIN_ROWS = 50_000
DENSE_LIMIT_BYTES = 1 << 30  # the one-hot features as a dense array up to this size (trees fit faster), else sparse


@dataclass
class ReferenceInputs:
    """The Transform features of the three splits (pandas frames of `*_xf` columns and the label)."""
    train: object
    valid: object
    evals: object  # in the order of the raw eval examples
    feature_set: str
    train_rows: int = 0  # rows of the train split; `train` holds all of them or a random train_limit
    train_limit: int = MAX_TRAIN_ROWS

    @property
    def sample_note(self) -> str:
        if len(self.train) >= self.train_rows:
            return f"trained on all {self.train_rows:,} train rows"
        return (f"trained on a random {len(self.train):,} of the {self.train_rows:,} train rows (at most "
                f"{self.train_limit:,}: the yardstick settles long before, and the candidate trained on all of "
                "them)")


def feature_set_of(transform_node, columns) -> str:
    """The feature set the Transform ran with (its custom_config), else the one its output columns show."""
    config = (transform_node.properties.get("custom_config") if transform_node is not None else "") or ""
    try:
        feature_set = (json.loads(config) or {}).get("feature_set")
    except (ValueError, AttributeError):
        feature_set = None
    if feature_set in F.FEATURE_SETS:
        return feature_set
    behavioural = F.dense_transformed_features(F.FEATURE_SET_BEHAVIOURAL)
    return F.FEATURE_SET_BEHAVIOURAL if set(behavioural) <= set(columns) else F.FEATURE_SET_SINGLE_ROW


def transform_raw(transform_graph_uri: str, serialized: list[bytes]):
    """Serialized raw tf.Examples through a run's Transform graph: a frame of the transformed features, one row
    per example, in order."""
    import pandas as pd
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(transform_graph_uri)
    spec = output.raw_feature_spec()
    columns: dict = {}
    for start in range(0, len(serialized), _PARSE_CHUNK):
        batch = serialized[start:start + _PARSE_CHUNK]
        raw = tf.io.parse_example(tf.constant(batch), spec)
        for name, tensor in output.transform_raw_features(raw, drop_unused_features=True).items():
            if isinstance(tensor, tf.SparseTensor):
                tensor = tf.sparse.to_dense(tensor)
            columns.setdefault(name, []).append(tensor.numpy().reshape(len(batch), -1)[:, 0])
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})


def sample_records(records: list, limit: int, seed: int = 0) -> list:
    """At most `limit` of `records`, drawn at random without replacement, in their original order."""
    if len(records) <= limit:
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
    return [records[i] for i in keep]


def reference_inputs(nodes: dict, examples_uri: str, eval_serialized: list[bytes], valid_serialized: list[bytes],
                     max_train_rows: int = MAX_TRAIN_ROWS) -> tuple[ReferenceInputs | None, str]:
    """(the reference models' inputs, "") from the run's Transform graph applied to its raw examples
    (`examples_uri`: the examples Transform and the Trainer read), or (None, why they cannot be built)."""
    node = nodes.get(F.NODE_TRANSFORM)
    graph = node.artifact("transform_graph") if node is not None else None
    if node is None or node.state != "COMPLETE" or graph is None:
        return None, (f"the run has no Transform graph ({F.NODE_TRANSFORM} "
                      + ("did not run" if node is None else f"ended {node.state}") + ")")
    from fraud import examples as X

    train_records = X.read_records(X.split_files(examples_uri, F.SPLIT_TRAIN))
    train = transform_raw(graph.uri, sample_records(train_records, max_train_rows))
    valid = transform_raw(graph.uri, valid_serialized)
    evals = transform_raw(graph.uri, eval_serialized)
    feature_set = feature_set_of(node, train.columns)
    needed = F.dense_transformed_features(feature_set) + F.CATEGORICAL_TRANSFORMED_FEATURES + (F.LABEL,)
    for split, frame in ((F.SPLIT_TRAIN, train), (F.SPLIT_VALID, valid), (F.SPLIT_EVAL, evals)):
        missing = [c for c in needed if c not in frame and not (split == F.SPLIT_EVAL and c == F.LABEL)]
        if missing:
            return None, f"the Transform graph's output for {split} lacks {', '.join(missing)}"
    return ReferenceInputs(train, valid, evals, feature_set, train_rows=len(train_records),
                           train_limit=max_train_rows), ""


def reference_features(frame, feature_set: str = F.FEATURE_SET_BEHAVIOURAL):
    """(frame of the model's transformed features, dense names, categorical names)."""
    dense, categorical = list(F.dense_transformed_features(feature_set)), list(F.CATEGORICAL_TRANSFORMED_FEATURES)
    return frame[dense + categorical], dense, categorical


def _finite(z, dense: bool):
    """float32 features with NaN/inf replaced (Transform imputes; this only guards the yardstick): a dense array
    when `dense`, else a CSR matrix (thousands of one-hot terminal ids would not fit densely)."""
    from scipy import sparse

    z = sparse.csr_matrix(z, dtype=np.float32)
    z.data = np.nan_to_num(z.data)
    return z.toarray() if dense else z


def reference_models(inputs: ReferenceInputs, eval_rows, eval_config, alerts_per_day: float, *, valid_days: int,
                     eval_days: int, seed: int = 0) -> list[Reference]:
    """Logistic regression, random forest (supervised) and isolation forest (unsupervised) trained on the train
    split, thresholded for the same alert budget on the valid split, scored on eval with the run's TFMA metrics.

    `eval_rows`: the raw eval frame (label, card, day...), row for row with `inputs.evals`, for TFMA.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import IsolationForest, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    from fraud.threshold import choose_threshold

    if len(eval_rows) != len(inputs.evals):
        raise ValueError(f"{len(inputs.evals)} transformed eval rows for {len(eval_rows)} eval examples")
    x_train, dense, categorical = reference_features(inputs.train, inputs.feature_set)
    x_valid = reference_features(inputs.valid, inputs.feature_set)[0]
    x_eval = reference_features(inputs.evals, inputs.feature_set)[0]
    y_train = inputs.train[F.LABEL].to_numpy()
    prep = ColumnTransformer([
        ("dense", "passthrough", dense),  # Transform already imputed and scaled them
        # Sparse: thousands of terminal ids one-hot in a dense array would need tens of GiB.
        ("ids", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=True),
         categorical),
    ], sparse_threshold=1.0)
    started = time.time()
    z_train = prep.fit_transform(x_train)
    dense = max(len(x_train), len(x_valid), len(x_eval)) * z_train.shape[1] * 4 <= DENSE_LIMIT_BYTES
    z_train, z_valid, z_eval = (_finite(z, dense) for z in (z_train, prep.transform(x_valid),
                                                                prep.transform(x_eval)))
    prep_seconds = time.time() - started
    labels = eval_rows[F.LABEL].to_numpy()
    out = []

    def add(name, fit_and_score, note=""):
        t0 = time.time()
        s_valid, s_eval = fit_and_score()
        threshold, _ = choose_threshold(s_valid, valid_days, alerts_per_day)
        metrics, curves = tfma_metrics_from_scores(labels, s_eval, eval_config, eval_rows)
        if curves is not None:  # the exact matrix at the reference's own threshold (off TFMA's plot grid)
            curves = curves.with_points([exact_point(labels, s_eval, threshold)])
        at = curves.at(threshold) if curves is not None else None
        if at:
            metrics[OP_PRECISION], metrics[OP_RECALL] = at["precision"], at["recall"]
            metrics[OP_ALERTS_PER_DAY] = at["alerts"] / max(eval_days, 1)
        out.append(Reference(name, metrics, threshold, s_eval, curves, time.time() - t0, note))

    def logistic():
        model = LogisticRegression(max_iter=2000, C=1.0)
        model.fit(z_train, y_train)
        return model.predict_proba(z_valid)[:, 1], model.predict_proba(z_eval)[:, 1]

    def forest():
        model = RandomForestClassifier(n_estimators=120, max_depth=14, min_samples_leaf=3, max_features="sqrt",
                                       n_jobs=2, random_state=seed)
        model.fit(z_train, y_train)
        return model.predict_proba(z_valid)[:, 1], model.predict_proba(z_eval)[:, 1]

    def isolation():
        model = IsolationForest(n_estimators=150, random_state=seed, n_jobs=2)
        model.fit(z_train)
        ref = np.sort(-model.score_samples(z_train))
        # Anomaly score -> share of training rows that are less anomalous: a rank in [0, 1], not a probability.
        rank = lambda z: np.searchsorted(ref, -model.score_samples(z), side="right") / len(ref)  # noqa: E731
        return rank(z_valid), rank(z_eval)

    add(LOGISTIC, logistic, note=f"the shared one-hot encoding of the vocabulary ids ({prep_seconds:.1f} s) is not "
                                 "included in its seconds")
    add(FOREST, forest)
    add(ISOLATION, isolation,
        note="trained without labels; its score is an anomaly rank, so calibration does not apply")
    return out
