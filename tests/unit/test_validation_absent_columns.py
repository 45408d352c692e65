"""An optional numeric column that is absent (NaN in every row, as ingestion writes it) is not a range anomaly;
real out-of-range values still are. TFDV computes the statistics and the anomalies for real."""
import math

import pytest
import tensorflow as tf

from fraud import features as F
from fraud import validation as V


def _statistics(tmp_path, ages):
    import tensorflow_data_validation as tfdv

    path = str(tmp_path / "examples.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i, age in enumerate(ages):
            feature = {F.USER_AGE: tf.train.Feature(float_list=tf.train.FloatList(value=[age])),
                       F.AMOUNT: tf.train.Feature(float_list=tf.train.FloatList(value=[10.0 + i]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return tfdv.generate_statistics_from_tfrecord(path)


def _anomalies(statistics):
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text("schema/schema.pbtxt")
    return tfdv.validate_statistics(statistics, schema)


@pytest.mark.parametrize("ages,absent", [([math.nan] * 30, True), ([math.nan] * 29 + [40.0], False),
                                         ([math.nan] * 20 + [3.0] * 10, False)])
def test_a_column_missing_in_every_row_has_no_range_anomaly(tmp_path, ages, absent):
    statistics = _statistics(tmp_path, ages)
    assert (F.USER_AGE in V.all_missing_numeric(statistics)) is absent
    anomalies = _anomalies(statistics)
    kept = V.without_absent_column_ranges(anomalies, V.all_missing_numeric(statistics))
    low = any(age < 16 for age in ages if not math.isnan(age))
    if absent:
        assert F.USER_AGE in anomalies.anomaly_info, "TFDV reports the all-NaN column out of range (min 0)"
        assert F.USER_AGE not in kept.anomaly_info
    else:
        assert (F.USER_AGE in kept.anomaly_info) is low  # real low ages are still named
    # everything else TFDV found (here: the columns this small file lacks) is untouched
    assert set(kept.anomaly_info) - {F.USER_AGE} == set(anomalies.anomaly_info) - {F.USER_AGE}
