"""Keras trainer: TFX's `run_fn` is a thin adapter over build_model / train / export_serving_model.

Class imbalance: positives get weight w = sqrt(neg/pos) during training; the exported score undoes the
weighting (odds / w), so serving returns calibrated probabilities while training still sees enough fraud.
"""
from __future__ import annotations

import math

import keras
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from fraud import export as export_lib
from fraud import features as F
from fraud.settings import required_config

BATCH_SIZE = 256
EMBEDDING_DIM = 4
EARLY_STOPPING_PATIENCE = 3
STEPS_PER_EPOCH_MAX = 100


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


def _dataset(fn_args_files, data_accessor, tf_transform_output, feature_set, *, num_epochs=None, shuffle=True):
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=BATCH_SIZE, label_key=F.LABEL, num_epochs=num_epochs, shuffle=shuffle, shuffle_seed=7)
    dataset = data_accessor.tf_dataset_factory(
        fn_args_files, options, tf_transform_output.transformed_metadata.schema)
    names = F.dense_transformed_features(feature_set) + F.CATEGORICAL_TRANSFORMED_FEATURES
    return dataset.map(lambda features, label: ({k: features[k] for k in names}, label))


def count_labels(dataset) -> tuple[int, int]:
    positives = total = 0
    for _, label in dataset:
        label = label.numpy()
        positives += int(label.sum())
        total += int(label.size)
    return positives, total


def positive_weight(positives: int, total: int) -> float:
    negatives = total - positives
    return float(math.sqrt(negatives / positives)) if positives else 1.0


def vocabulary_sizes(tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    return {F.transformed_name(key): tf_transform_output.vocabulary_size_by_name(F.vocabulary_name(key))
            + F.OOV_BUCKETS for key in F.CATEGORICAL_FEATURES}


def run_fn(fn_args):
    """TFX entry point (referenced as `trainer_module.run_fn`)."""
    keras.utils.set_random_seed(int(required_config(fn_args.custom_config, F.CONFIG_SEED)))
    feature_set = required_config(fn_args.custom_config, F.CONFIG_FEATURE_SET)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    positives, total = count_labels(_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                                             feature_set, num_epochs=1, shuffle=False))
    weight = positive_weight(positives, total)
    print(f"train rows={total} fraud={positives} positive class weight={weight:.2f}", flush=True)

    model = build_model(vocabulary_sizes(tf_transform_output), positives / max(total, 1), feature_set=feature_set)
    steps_per_epoch = max(1, min(fn_args.train_steps, STEPS_PER_EPOCH_MAX))
    epochs = max(1, math.ceil(fn_args.train_steps / steps_per_epoch))
    train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output, feature_set)
    valid = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, feature_set,
                     num_epochs=1, shuffle=False)
    history = model.fit(
        train, validation_data=valid, epochs=epochs, steps_per_epoch=steps_per_epoch,
        class_weight={0: 1.0, 1: weight}, verbose=2,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor=f"val_{F.METRIC_PR_AUC}", mode="max",
                                          patience=EARLY_STOPPING_PATIENCE, restore_best_weights=True),
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
        ],
    )
    best = max(history.history.get(f"val_{F.METRIC_PR_AUC}", [float("nan")]))
    print(f"epochs run={len(history.history['loss'])} best val PR-AUC={best:.4f}", flush=True)
    export_lib.export_serving_model(model, tf_transform_output, fn_args.serving_model_dir, positive_weight=weight,
                                    feature_set=feature_set)
