"""Drift limits on every model input: raw single-row inputs stop the pipeline, the others (behavioural ones
included) warn. Measured by TFDV itself on statistics of two small frames."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import features as F

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "schema.pbtxt"


@pytest.fixture(scope="module")
def schema():
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(str(SCHEMA))


def test_every_model_input_but_the_event_time_has_a_drift_limit(schema):
    limited = {f.name for f in schema.feature if f.HasField("drift_comparator")}
    assert limited == set(F.MODEL_INPUTS) - set(F.DRIFT_UNMEASURED)
    assert set(F.DRIFT_BLOCKING_FEATURES) <= limited


def _stats(frame):
    import tensorflow_data_validation as tfdv

    return tfdv.generate_statistics_from_dataframe(frame)


def _frame(rng, n, ratio_scale, amount_scale):
    return pd.DataFrame({F.AMOUNT: rng.lognormal(5, 0.5, n) * amount_scale,
                         "user_amount_ratio_30d": rng.lognormal(0, 0.3, n) * ratio_scale,
                         F.CITY: rng.choice(["Lima", "Cusco"], n)})


def test_a_behavioural_input_that_drifts_warns_and_a_raw_one_blocks(schema):
    from fraud.validation import drifts

    assert "user_amount_ratio_30d" in F.MODEL_INPUTS and "user_amount_ratio_30d" not in F.DRIFT_BLOCKING_FEATURES
    rng = np.random.default_rng(0)
    train = _stats(_frame(rng, 4000, 1.0, 1.0))
    blocking, warnings = drifts(train, _stats(_frame(rng, 4000, 8.0, 1.0)), schema)
    assert blocking == []
    assert len(warnings) == 1 and "'user_amount_ratio_30d'" in warnings[0] and "Jensen-Shannon" in warnings[0]
    blocking, warnings = drifts(train, _stats(_frame(rng, 4000, 1.0, 30.0)), schema)
    assert len(blocking) == 1 and f"'{F.AMOUNT}'" in blocking[0] and warnings == []
    assert drifts(train, _stats(_frame(rng, 4000, 1.0, 1.0)), schema) == ([], [])  # same distribution
