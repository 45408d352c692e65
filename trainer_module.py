"""Keras trainer: TFX's `run_fn` is a thin adapter over build_model / train / export_serving_model.

Class imbalance: positives get weight w = sqrt(neg/pos) during training; the exported score undoes the
weighting (odds / w), so serving returns calibrated probabilities while training still sees enough fraud.

Order and length come from the data (training_plan, shuffled_batches):
- The train split is stored in time order. A bounded shuffle buffer would keep every batch inside a few days,
  and the first week's rows (whose delayed-label features are still 0) would fill the first steps. The whole
  transformed split is therefore held in memory and every pass visits it in a new random order.
- An epoch is one pass over the split (or an equal share of --train-steps when that is less than a pass), the
  batch grows with the data (256 to 4,096 rows) so that a pass stays about 200 steps.
- Early stopping watches the validation log-loss (smoother than PR-AUC), not before MIN_EPOCHS epochs, and
  restores the best epoch from then on: it never returns a model that has seen only a part of the data.
- A model whose validation ROC-AUC ends below --min-valid-roc-auc learned nothing: the Trainer fails with
  fraud.errors.ModelRejected instead of exporting a candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from fraud import export as export_lib
from fraud import features as F
from fraud.errors import DataContractError, ModelRejected
from fraud.settings import required_config

BATCH_SIZE = 256  # the smallest batch (small data sets)
BATCH_SIZE_MAX = 4096
STEPS_PER_PASS = 200  # the batch grows with the data to keep a pass about this many steps
MAX_EPOCHS = 10
MIN_EPOCHS = 2  # epochs before early stopping may act, and the first epoch it may restore
EARLY_STOPPING_PATIENCE = 2
EARLY_STOPPING_MIN_DELTA = 1e-4
EMBEDDING_DIM = 4


def build_model(vocab_sizes: dict[str, int], fraud_rate: float, learning_rate: float = 1e-3,
                feature_set: str = F.FEATURE_SET_BEHAVIOURAL) -> keras.Model:
    """A small tabular network: dense features + one embedding per categorical feature."""
    inputs, parts = {}, []
    for name in F.dense_transformed_features(feature_set):
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        parts.append(inputs[name])
    for name in F.CATEGORICAL_TRANSFORMED_FEATURES:
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="int64")
        embedded = keras.layers.Embedding(vocab_sizes[name], EMBEDDING_DIM, name=f"emb_{name}")(inputs[name])
        parts.append(keras.layers.Flatten()(embedded))
    x = keras.layers.Concatenate()(parts)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    rate = min(max(fraud_rate, 1e-4), 0.5)
    bias = keras.initializers.Constant(math.log(rate / (1 - rate)))  # start at the base rate
    output = keras.layers.Dense(1, activation="sigmoid", bias_initializer=bias, name=F.SCORE_OUTPUT)(x)
    model = keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(curve="PR", name=F.METRIC_PR_AUC),
                 keras.metrics.AUC(curve="ROC", name=F.METRIC_ROC_AUC)],
    )
    return model


@dataclass(frozen=True)
class TrainingPlan:
    batch_size: int
    steps_per_epoch: int
    epochs: int
    steps_per_pass: int

    def describe(self, rows: int) -> str:
        passes = self.epochs * self.steps_per_epoch * self.batch_size / max(rows, 1)
        return (f"batch {self.batch_size}, {self.epochs} epoch(s) of {self.steps_per_epoch} steps "
                f"(a pass is {self.steps_per_pass} steps): at most {passes:.1f} passes over {rows} rows")


def training_plan(rows: int, max_steps: int) -> TrainingPlan:
    """Batch size and epochs for `rows` train rows and at most about `max_steps` steps (--train-steps).

    Epochs are whole passes over the shuffled split while the steps allow, at most MAX_EPOCHS of them; with fewer
    steps than a pass the steps are shared equally by ceil(max_steps / pass) epochs, so the total is max_steps
    give or take an epoch count."""
    rows, max_steps = max(int(rows), 1), max(int(max_steps), 1)
    batch = 2 ** round(math.log2(max(rows / STEPS_PER_PASS, 1)))
    batch = int(min(BATCH_SIZE_MAX, max(BATCH_SIZE, batch)))
    per_pass = math.ceil(rows / batch)
    epochs = max(1, min(MAX_EPOCHS, math.ceil(max_steps / per_pass)))
    return TrainingPlan(batch_size=batch, steps_per_epoch=max(1, min(per_pass, math.ceil(max_steps / epochs))),
                        epochs=epochs, steps_per_pass=per_pass)


def _dataset(fn_args_files, data_accessor, tf_transform_output, feature_set, *, batch_size: int):
    """One pass over files of raw examples, in their stored order, through the Transform graph (the same graph the
    serving signatures run), as ({name: [batch, 1]}, label)."""
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=False)
    dataset = data_accessor.tf_dataset_factory(fn_args_files, options, tf_transform_output.raw_metadata.schema)
    layer = tf_transform_output.transform_features_layer()
    names = F.dense_transformed_features(feature_set) + F.CATEGORICAL_TRANSFORMED_FEATURES

    def transform(raw):
        transformed = layer(raw)
        return {k: transformed[k] for k in names}, transformed[F.LABEL]

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_columns(dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A finite dataset of ({name: values}, label) batches -> ({name: all its values}, all labels) in memory."""
    parts: dict[str, list] = {}
    labels = []
    for features, label in dataset:
        for name, values in features.items():
            parts.setdefault(name, []).append(values.numpy())
        labels.append(label.numpy())
    if not labels:
        raise DataContractError("the train split has no rows")
    return {name: np.concatenate(values) for name, values in parts.items()}, np.concatenate(labels)


def shuffled_batches(columns: dict[str, np.ndarray], labels: np.ndarray, batch_size: int,
                     seed: int) -> tf.data.Dataset:
    """Endless batches of the rows in memory, every pass a new random order of ALL of them (a global shuffle:
    each batch draws from the whole time range). Only row numbers are shuffled, as one permutation per pass
    (8 bytes a row, not a shuffle buffer holding every row as an element); a batch gathers its rows."""
    rows = len(labels)
    features = {name: tf.constant(values) for name, values in columns.items()}
    label = tf.constant(labels)

    def gather(index):
        return {name: tf.gather(values, index) for name, values in features.items()}, tf.gather(label, index)

    order = (tf.data.Dataset.from_tensors(tf.range(rows, dtype=tf.int64)).repeat()
             .map(lambda every_row: tf.random.shuffle(every_row, seed=seed)).unbatch())
    return order.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def early_stopping() -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", min_delta=EARLY_STOPPING_MIN_DELTA, patience=EARLY_STOPPING_PATIENCE,
        start_from_epoch=MIN_EPOCHS, restore_best_weights=True)


def fit(model: keras.Model, columns: dict, labels: np.ndarray, valid, plan: TrainingPlan, *, weight: float,
        seed: int, callbacks=()) -> tuple[keras.callbacks.History, int]:
    """Train `model` on the rows in memory by `plan`, validating on `valid` after every epoch:
    (its history, the epoch whose weights the model ends with, counted from 0)."""
    stopper = early_stopping()
    history = model.fit(
        shuffled_batches(columns, labels, plan.batch_size, seed), validation_data=valid, epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch, class_weight={0: 1.0, 1: weight}, verbose=2,
        callbacks=[stopper, *callbacks])
    kept = stopper.best_epoch if stopper.best_weights is not None else len(history.history["loss"]) - 1
    return history, kept


def check_learned(valid_roc_auc: float, floor: float, *, epoch: int) -> None:
    """A model whose validation ROC-AUC is below `floor` learned nothing usable: ModelRejected, naming both."""
    if not valid_roc_auc >= floor:  # NaN (no fraud in valid) fails too
        raise ModelRejected(
            f"the trained model (epoch {epoch + 1}) has validation ROC-AUC {valid_roc_auc:.4f}, below the floor "
            f"{floor:g} (--min-valid-roc-auc): it learned nothing usable, so it is not a candidate. Check that the "
            "train split has fraud the features can see (the report's data section), raise --train-steps, or "
            "lower the floor to inspect it anyway")


def positive_weight(positives: int, total: int) -> float:
    negatives = total - positives
    return float(math.sqrt(negatives / positives)) if positives else 1.0


def vocabulary_sizes(tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    return {F.transformed_name(key): tf_transform_output.vocabulary_size_by_name(F.vocabulary_name(key))
            + F.OOV_BUCKETS for key in F.CATEGORICAL_FEATURES}


def run_fn(fn_args):
    """TFX entry point (referenced as `trainer_module.run_fn`)."""
    seed = int(required_config(fn_args.custom_config, F.CONFIG_SEED))
    floor = float(required_config(fn_args.custom_config, F.CONFIG_MIN_VALID_ROC_AUC))
    keras.utils.set_random_seed(seed)
    feature_set = required_config(fn_args.custom_config, F.CONFIG_FEATURE_SET)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    columns, labels = load_columns(_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                                            feature_set, batch_size=BATCH_SIZE_MAX))
    positives, total = int(labels.sum()), len(labels)
    weight = positive_weight(positives, total)
    plan = training_plan(total, fn_args.train_steps)
    held = sum(v.nbytes for v in columns.values()) / 2**20
    print(f"train rows={total} fraud={positives} positive class weight={weight:.2f} (held in memory: "
          f"{held:.0f} MiB); {plan.describe(total)}", flush=True)

    model = build_model(vocabulary_sizes(tf_transform_output), positives / max(total, 1), feature_set=feature_set)
    # Validated after every epoch: parsed and transformed once, then held (a few MB: the split is days, not months).
    valid = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, feature_set,
                     batch_size=BATCH_SIZE_MAX).cache()
    history, at = fit(model, columns, labels, valid, plan, weight=weight, seed=seed,
                      callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])
    values = {k: history.history[k][at] for k in ("val_loss", f"val_{F.METRIC_PR_AUC}", f"val_{F.METRIC_ROC_AUC}")}
    print(f"epochs run={len(history.history['loss'])}, model of epoch {at + 1}: val loss={values['val_loss']:.4f} "
          f"val PR-AUC={values[f'val_{F.METRIC_PR_AUC}']:.4f} val ROC-AUC={values[f'val_{F.METRIC_ROC_AUC}']:.4f}",
          flush=True)
    check_learned(values[f"val_{F.METRIC_ROC_AUC}"], floor, epoch=at)
    export_lib.export_serving_model(model, tf_transform_output, fn_args.serving_model_dir, positive_weight=weight,
                                    feature_set=feature_set)
