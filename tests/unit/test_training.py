"""The Trainer's order and length: a global shuffle of a time-ordered split, epochs that are passes, early stopping
that cannot return a model trained on part of the data (trainer_module)."""
import math

import numpy as np
import pytest

import trainer_module as T
from fraud import features as F


@pytest.mark.parametrize("rows", [1, 100, 5_000, 42_000, 200_000, 872_635, 5_000_000])
@pytest.mark.parametrize("max_steps", [1, 150, 1000, 20_000])
def test_a_plan_uses_whole_passes_within_the_steps(rows, max_steps):
    plan = T.training_plan(rows, max_steps)
    assert T.BATCH_SIZE <= plan.batch_size <= T.BATCH_SIZE_MAX
    assert plan.steps_per_pass == math.ceil(rows / plan.batch_size)
    assert 1 <= plan.steps_per_epoch <= plan.steps_per_pass and 1 <= plan.epochs <= T.MAX_EPOCHS
    total = plan.epochs * plan.steps_per_epoch
    assert total <= max_steps + plan.epochs  # the steps are a maximum, give or take one per epoch
    if max_steps >= plan.steps_per_pass * T.MAX_EPOCHS:
        assert plan.steps_per_epoch == plan.steps_per_pass and plan.epochs == T.MAX_EPOCHS
    if max_steps < plan.steps_per_pass:  # less than a pass: one epoch of all the steps
        assert plan.epochs == 1 and plan.steps_per_epoch == max_steps
    if rows >= T.BATCH_SIZE * T.STEPS_PER_PASS and rows <= T.BATCH_SIZE_MAX * T.STEPS_PER_PASS:
        assert T.STEPS_PER_PASS / 2 <= plan.steps_per_pass <= T.STEPS_PER_PASS * 2  # the batch grew with the data


def test_every_batch_draws_from_the_whole_split_and_every_pass_is_a_new_permutation():
    rows, batch = 20_000, 256
    columns = {"row": np.arange(rows, dtype=np.int64).reshape(-1, 1)}
    labels = np.arange(rows, dtype=np.float32)
    per_pass = math.ceil(rows / batch)
    batches = list(T.shuffled_batches(columns, labels, batch, seed=3).take(2 * per_pass).as_numpy_iterator())
    first_rows = batches[0][0]["row"].reshape(-1)
    assert (batches[0][1] == first_rows).all()  # features and label of the same row travel together
    # A time-ordered split: a bounded buffer would keep the first batch among the first rows; a global shuffle
    # puts about half of it in the second half.
    assert 0.35 < (first_rows >= rows // 2).mean() < 0.65 and first_rows.max() - first_rows.min() > 0.9 * rows
    stream = np.concatenate([b[0]["row"].reshape(-1) for b in batches])  # batches run on across passes
    passes = [stream[k * rows:(k + 1) * rows] for k in range(2)]
    for seen in passes:
        assert sorted(seen.tolist()) == list(range(rows))  # each pass: every row exactly once
    assert (passes[0] != passes[1]).mean() > 0.9  # and in a new order


def _delayed_signal_rows(rows: int, seed: int):
    """Time-ordered rows where fraud is told apart only by a delayed-label feature that is 0 (not known yet) for the
    first 60% of them, as the restaurant's delayed fraud rate is during the first weeks of a split."""
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.02).astype(np.float32)
    columns = {name: rng.normal(size=(rows, 1)).astype(np.float32) for name in F.dense_transformed_features()}
    signal = np.where(label == 1, rng.normal(2.5, 1.0, rows), rng.normal(0.0, 1.0, rows)).astype(np.float32)
    signal[: int(rows * 0.6)] = 0.0
    columns[F.transformed_name(F.BEHAVIOUR_FEATURES[-1])] = signal.reshape(-1, 1)
    columns.update({name: np.zeros((rows, 1), np.int64) for name in F.CATEGORICAL_TRANSFORMED_FEATURES})
    return columns, label


@pytest.mark.slow
def test_a_signal_known_only_late_in_the_split_is_learned():
    """Trained on time-ordered rows whose fraud signal exists only in their last 40%: the global shuffle and whole
    passes find it (eval ROC-AUC on rows where it is known > 0.8)."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    columns, labels = _delayed_signal_rows(60_000, seed=1)
    valid_columns, valid_labels = _delayed_signal_rows(25_000, seed=2)
    late = slice(int(25_000 * 0.6), None)
    valid = tf.data.Dataset.from_tensor_slices(({k: v[late] for k, v in valid_columns.items()},
                                                valid_labels[late])).batch(4096)
    T.keras.utils.set_random_seed(5)
    model = T.build_model({name: 3 for name in F.CATEGORICAL_TRANSFORMED_FEATURES}, float(labels.mean()))
    plan = T.training_plan(len(labels), 1000)
    history, kept = T.fit(model, columns, labels, valid, plan,
                          weight=T.positive_weight(int(labels.sum()), len(labels)), seed=5)
    assert len(history.history["loss"]) >= T.MIN_EPOCHS + 1 and kept >= T.MIN_EPOCHS
    scores = model.predict({k: v[late] for k, v in valid_columns.items()}, batch_size=4096, verbose=0).reshape(-1)
    assert roc_auc_score(valid_labels[late], scores) > 0.8


def test_a_model_below_the_validation_floor_is_rejected_by_name():
    from fraud.errors import EXIT_FAILED, ModelRejected, exit_code_for

    T.check_learned(0.61, 0.6, epoch=2)  # above the floor: nothing happens
    with pytest.raises(ModelRejected, match=r"\(epoch 3\) has validation ROC-AUC 0.5500, below the floor 0.6 "
                                            r"\(--min-valid-roc-auc\)") as caught:
        T.check_learned(0.55, 0.6, epoch=2)
    assert exit_code_for(caught.value) == EXIT_FAILED
    with pytest.raises(ModelRejected):  # no ROC-AUC at all (a valid split without fraud) is no evidence either
        T.check_learned(float("nan"), 0.6, epoch=0)
