"""tf.Transform run on fixture rows, checking computed values (not just shapes)."""
import math
import functools
import tempfile
from datetime import datetime, timezone

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

import transform_module
from fraud import features as F

NAN = float("nan")


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(timezone.utc).timestamp())


def _row(tid, amount, currency, when, home, city, payment="credit_card", age=40.0, label=0):
    row = {k: "" for k in F.CATEGORICAL_FEATURES + F.PASSTHROUGH_STRING_COLUMNS}
    row.update({k: 0.0 for k in F.BEHAVIOUR_FEATURES})
    row["user_txn_count_1d"] = float(len(tid) * (ord(tid) - 96))  # a, b, c... -> 1, 2, 3...
    row["restaurant_txn_count_30d"] = float(10 * (ord(tid) - 96) ** 2)  # 10, 40, 90...: its own mean and std
    row.update({F.TRANSACTION_ID: tid, F.AMOUNT: amount, F.CURRENCY: currency, F.EVENT_TIME: _utc(when),
                F.HOME_CITY: home, F.CITY: city, F.PAYMENT_METHOD: payment, F.USER_AGE: age, F.LABEL: label,
                F.FRAUD_SCENARIO: "stolen_card" if label else "none"})
    return {k: [v] for k, v in row.items()}


ROWS = [
    _row("a", 100.0, "PEN", "2026-06-05T23:30:00-05:00", "Lima", "Cusco"),              # Friday dinner
    _row("b", NAN, "PEN", "2026-06-07T03:00:00-05:00", "Lima", "Lima", age=NAN),         # Sunday night
    _row("c", 300.0, "PEN", "2026-06-08T13:00:00-05:00", "Cusco", "Atlantis", "debit_card", age=20.0),
    _row("d", 50.0, "USD", "2026-06-08T20:00:00-05:00", "New York", "Lima", age=60.0),
    _row("e", 1000.0, "PEN", "2026-06-09T21:00:00-05:00", "", "Arequipa", label=1, age=80.0),
    _row("f", 200.0, "PEN", "2026-06-10T12:00:00-05:00", "Lima", "Lima"),
    _row("g", 187.5, "PEN", "2026-06-10T12:05:00-05:00", "Lima", "Lima"),
]


def _feature_spec():
    spec = {}
    for key in F.CATEGORICAL_FEATURES + F.PASSTHROUGH_STRING_COLUMNS:
        spec[key] = tf.io.FixedLenFeature([1], tf.string)
    spec.update({F.AMOUNT: tf.io.FixedLenFeature([1], tf.float32),
                 F.USER_AGE: tf.io.FixedLenFeature([1], tf.float32),
                 F.EVENT_TIME: tf.io.FixedLenFeature([1], tf.int64),
                 F.LABEL: tf.io.FixedLenFeature([1], tf.int64)})
    spec.update({k: tf.io.FixedLenFeature([1], tf.float32) for k in F.BEHAVIOUR_FEATURES})
    return spec


@pytest.fixture(scope="module")
def transformed():
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(_feature_spec()))
    # use_deep_copy_optimization=True as in TFX's Transform executor: it breaks on Beam 2.74 when the
    # preprocessing_fn needs more than one analysis phase, so this fixture catches that too.
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(
            temp_dir=tmp, force_tf_compat_v1=False, use_deep_copy_optimization=True):
        # Analyze, then transform, as TFX's executor does (AnalyzeAndTransformDataset always deep-copies).
        fn = functools.partial(transform_module.preprocessing_fn,
                               custom_config={F.CONFIG_FEATURE_SET: F.FEATURE_SET_BEHAVIOURAL})
        transform_fn = (ROWS, metadata) | tft_beam.AnalyzeDataset(fn)
        data, _ = ((ROWS, metadata), transform_fn) | tft_beam.TransformDataset(output_record_batches=False)
    return {row_id[F.TRANSACTION_ID][0]: out for row_id, out in zip(ROWS, data)}


def _v(out, key):
    return float(np.asarray(out[key]).reshape(-1)[0])


def test_outputs_are_exactly_the_model_features_and_label(transformed):
    expected = set(F.dense_transformed_features()) | set(F.CATEGORICAL_TRANSFORMED_FEATURES) | {F.LABEL}
    assert set(transformed["a"]) == expected
    assert not any(F.FRAUD_SCENARIO in key for key in transformed["a"])  # the explanation never leaks


def test_missing_amount_is_imputed_with_the_train_median(transformed):
    # Present amounts (PEN-equivalent irrelevant here): 100, 300, 50, 1000, 200, 187.5 -> median 187.5/200.
    assert _v(transformed["b"], F.AMOUNT_MISSING) == 1.0
    assert _v(transformed["a"], F.AMOUNT_MISSING) == 0.0
    imputed = _v(transformed["b"], F.transformed_name(F.AMOUNT))
    candidates = [_v(transformed[k], F.transformed_name(F.AMOUNT)) for k in ("f", "g")]
    assert min(abs(imputed - c) for c in candidates) < 1e-5


def test_missing_age_flag_and_imputation(transformed):
    assert _v(transformed["b"], F.AGE_MISSING) == 1.0
    assert _v(transformed["a"], F.AGE_MISSING) == 0.0
    # Ages present: 40, 20, 60, 80, 40, 40 -> median 40, same z-score as row a.
    assert _v(transformed["b"], F.transformed_name(F.USER_AGE)) == pytest.approx(
        _v(transformed["a"], F.transformed_name(F.USER_AGE)), abs=1e-5)


def test_usd_amount_is_converted_to_pen(transformed):
    # 50 USD = 187.5 PEN: same PEN feature as row g, but a different raw-amount feature.
    assert _v(transformed["d"], F.IS_FOREIGN_CURRENCY) == 1.0
    assert _v(transformed["d"], F.AMOUNT_PEN_LOG) == pytest.approx(_v(transformed["g"], F.AMOUNT_PEN_LOG), abs=1e-5)
    assert _v(transformed["d"], F.transformed_name(F.AMOUNT)) < _v(transformed["g"], F.transformed_name(F.AMOUNT))


def test_time_features_are_in_lima_local_time(transformed):
    a, b = transformed["a"], transformed["b"]  # Friday 23:30, Sunday 03:00 (Lima)
    assert _v(a, F.IS_NIGHT) == 0.0 and _v(a, F.IS_WEEKEND) == 0.0
    assert _v(b, F.IS_NIGHT) == 1.0 and _v(b, F.IS_WEEKEND) == 1.0
    assert _v(a, F.HOUR_SIN) == pytest.approx(math.sin(23 * 2 * math.pi / 24), abs=1e-5)
    assert _v(b, F.HOUR_COS) == pytest.approx(math.cos(3 * 2 * math.pi / 24), abs=1e-5)
    assert _v(a, F.DOW_SIN) == pytest.approx(math.sin(4 * 2 * math.pi / 7), abs=1e-5)  # Friday = 4


def test_home_distance(transformed):
    # Unknown restaurant city and missing home city -> flagged; Lima->Lima is the shortest distance.
    assert _v(transformed["c"], F.DISTANCE_MISSING) == 1.0
    assert _v(transformed["e"], F.DISTANCE_MISSING) == 1.0
    assert _v(transformed["a"], F.DISTANCE_MISSING) == 0.0
    assert _v(transformed["f"], F.DISTANCE_LOG) < _v(transformed["a"], F.DISTANCE_LOG) < _v(transformed["d"], F.DISTANCE_LOG)


def test_distance_graph_matches_python_haversine():
    km = transform_module.home_distance_km(tf.constant(["Lima"]), tf.constant(["Cusco"])).numpy()[0]
    lima, cusco = F.CITY_COORDS["Lima"], F.CITY_COORDS["Cusco"]
    assert km == pytest.approx(F.haversine_km(*lima, *cusco), rel=1e-4)
    assert 560 < km < 590


def test_vocabulary_indices(transformed):
    key = F.transformed_name(F.PAYMENT_METHOD)
    credit = {_v(transformed[k], key) for k in ("a", "b", "d", "e", "f", "g")}
    assert len(credit) == 1
    assert _v(transformed["c"], key) not in credit
    assert credit == {0.0}  # the most frequent value gets index 0



def test_an_empty_id_is_its_own_vocabulary_entry(transformed):
    """A missing restaurant id ("" in every fixture row) gets a vocabulary index of its own, not the OOV bucket
    (index = vocabulary size): the model can tell "no restaurant" apart, a missing-value indicator."""
    key = F.transformed_name(F.RESTAURANT_ID)
    assert {_v(transformed[k], key) for k in transformed} == {0.0}


def test_behaviour_features_are_log_scaled_and_standardised(transformed):
    key = F.transformed_name("user_txn_count_1d")
    raw = {k: float(ord(k) - 96) for k in transformed}  # 1..7
    logs = np.log1p(np.array([raw[k] for k in sorted(raw)]))
    expected = (np.log1p(raw["c"]) - logs.mean()) / logs.std()
    assert _v(transformed["c"], key) == pytest.approx(expected, abs=1e-4)
    assert _v(transformed["a"], key) < _v(transformed["g"], key)
    # every feature is standardised with its own column's mean and std (one matrix analyzer for all of them)
    other = F.transformed_name("restaurant_txn_count_30d")
    logs = np.log1p(np.array([10.0 * (ord(k) - 96) ** 2 for k in sorted(transformed)]))
    for k in sorted(transformed):
        assert _v(transformed[k], other) == pytest.approx(
            (np.log1p(10.0 * (ord(k) - 96) ** 2) - logs.mean()) / logs.std(), abs=1e-4)
    constant = F.transformed_name("device_txn_count_1d")  # 0 in every row: variance 0 scales to 0, not NaN
    assert all(_v(transformed[k], constant) == 0.0 for k in transformed)
