"""The decline threshold: the lowest threshold among the scores (at or above the operating one) reaching a precision target."""
import json

import numpy as np
import pytest

from fraud import threshold as T


def _scores_and_labels():
    rng = np.random.default_rng(3)
    good = rng.uniform(0.0, 0.6, 2000)  # good guests never score above 0.6
    fraud_low = rng.uniform(0.3, 0.6, 40)
    fraud_high = rng.uniform(0.8, 0.99, 60)  # above 0.8: only fraud
    mixed_good = np.full(20, 0.705)  # 0.70-0.71: 20 good guests among the frauds
    mixed_fraud = np.full(20, 0.755)
    scores = np.concatenate([good, fraud_low, fraud_high, mixed_good, mixed_fraud])
    labels = np.concatenate([np.zeros(2000), np.ones(40), np.ones(60), np.zeros(20), np.ones(20)])
    return scores, labels


def test_the_lowest_threshold_that_reaches_the_target():
    scores, labels = _scores_and_labels()
    threshold, precision, rows = T.choose_decline_threshold(scores, labels, at_least=0.0, precision=0.9)
    assert threshold == pytest.approx(0.705)  # above the 20 good guests at 0.705: only fraud left
    assert precision == 1.0 and rows == 80
    # a looser target is met lower down, where the 20 good guests are still flagged: 80 / 100 = 0.8
    threshold, precision, rows = T.choose_decline_threshold(scores, labels, at_least=0.0, precision=0.8)
    # (every score is a candidate, so it may go a little below 0.6 while a low-scoring fraud keeps it at 0.8)
    assert 0.59 <= threshold < 0.705 and precision >= 0.8 and rows >= 100
    assert labels[scores > threshold].mean() == pytest.approx(precision) and (scores > threshold).sum() == rows
    lower = scores[scores < threshold].max()
    assert labels[scores > lower].mean() < 0.8  # the next score down misses the target
    # never below the operating threshold: the lowest score at or above it
    assert T.choose_decline_threshold(scores, labels, at_least=0.9, precision=0.5)[0] == scores[scores >= 0.9].min()


def test_no_threshold_reaches_the_target_means_never_decline():
    rng = np.random.default_rng(4)
    scores, labels = rng.uniform(0, 1, 500), rng.integers(0, 2, 500)  # a score that knows nothing
    assert T.choose_decline_threshold(scores, labels, at_least=0.0, precision=0.99) == (T.NEVER, None, 0)
    # too few rows to measure a precision on is not a precision
    few = np.array([0.95, 0.96, 0.97, 0.1]), np.array([1, 1, 1, 0])
    assert T.choose_decline_threshold(*few, at_least=0.0, precision=0.9) == (T.NEVER, None, 0)
    with pytest.raises(ValueError, match="precision"):
        T.choose_decline_threshold(scores, labels, at_least=0.0, precision=0.0)


def test_files_written_before_the_decline_fields_still_read():
    old = {"threshold": 0.02, "alerts_per_day_budget": 50.0, "split": "valid", "split_days": 7,
           "split_rows": 3000, "split_alerts": 120}
    op = T.OperatingThreshold.from_json(json.dumps(old))
    assert op.threshold == 0.02 and op.decline_threshold == T.NEVER and op.decline_precision is None
    new = T.OperatingThreshold(**old, decline_threshold=0.4, decline_precision_target=0.9, decline_precision=0.93,
                               split_declines=14)
    assert T.OperatingThreshold.from_json(new.to_json()) == new
