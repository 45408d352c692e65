"""Export the trained model with the Transform graph and TF-Serving-ready signatures.

Signatures (names in fraud.features):
- serving_default: one tensor per raw model input (shape [batch]) -> {fraud_score: [batch]}; the REST row format
  `{"instances": [{"amount": 150.25, "city": "Lima", ...}]}` maps onto it directly.
- serving_examples: serialized tf.Example [batch] -> {fraud_score}; used by TFMA.
- classify: serialized tf.Example `inputs` -> {scores: [batch, 2], classes: [batch, 2]}, with the method name
  `tensorflow/serving/classify` so TF Serving's Classify API accepts it.
"""
from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from fraud import features as F
from fraud import warmup

CLASSIFY_METHOD = "tensorflow/serving/classify"
CLASS_LABELS = ("0", "1")  # legitimate, fraudulent


def raw_input_specs(tf_transform_output, feature_set: str) -> dict[str, tf.TensorSpec]:
    spec = tf_transform_output.raw_feature_spec()
    return {k: tf.TensorSpec([None], spec[k].dtype, name=k) for k in F.model_inputs(feature_set)}


class _ServingModule(tf.Module):
    def __init__(self, model, tf_transform_output, positive_weight: float, feature_set: str):
        super().__init__()
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.positive_weight = tf.constant(positive_weight, tf.float32)
        spec = tf_transform_output.raw_feature_spec()
        self._parse_spec = {k: spec[k] for k in F.model_inputs(feature_set)}
        self._model_keys = F.dense_transformed_features(feature_set) + F.CATEGORICAL_TRANSFORMED_FEATURES

    def score(self, raw: dict) -> tf.Tensor:
        """Raw features ([batch, 1] each) -> calibrated fraud probability [batch]."""
        transformed = self.tft_layer(raw)
        p = tf.reshape(self.model({k: transformed[k] for k in self._model_keys}, training=False), [-1])
        # Undo the positive class weight: true odds = weighted odds / w.
        return p / (p + (1.0 - p) * self.positive_weight)

    def score_examples(self, serialized: tf.Tensor) -> tf.Tensor:
        return self.score(tf.io.parse_example(serialized, self._parse_spec))


def export_serving_model(model, tf_transform_output, export_dir: str, *, positive_weight: float,
                         feature_set: str = F.FEATURE_SET_BEHAVIOURAL) -> None:
    module = _ServingModule(model, tf_transform_output, positive_weight, feature_set)

    def serve_raw(**features):
        return {F.SCORE_OUTPUT: module.score({k: tf.expand_dims(v, -1) for k, v in features.items()})}

    def serve_examples(examples):
        return {F.SCORE_OUTPUT: module.score_examples(examples)}

    def classify(inputs):
        p = module.score_examples(inputs)
        batch = tf.shape(p)[0]
        classes = tf.tile(tf.constant([list(CLASS_LABELS)]), [batch, 1])
        return {"scores": tf.stack([1.0 - p, p], axis=1), "classes": classes}

    signatures = {
        F.SERVING_SIGNATURE: tf.function(serve_raw).get_concrete_function(
            **raw_input_specs(tf_transform_output, feature_set)),
        F.EXAMPLES_SIGNATURE: tf.function(serve_examples).get_concrete_function(
            tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)),
        F.CLASSIFY_SIGNATURE: tf.function(classify).get_concrete_function(
            tf.TensorSpec([None], tf.string, name=F.CLASSIFY_INPUT)),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    _set_method_name(export_dir, F.CLASSIFY_SIGNATURE, CLASSIFY_METHOD)
    # TF Serving's warm-up records: synthetic rows only
    warmup.write_warmup_requests(export_dir, read_signature_defs(export_dir))


def _read_saved_model(export_dir: str) -> saved_model_pb2.SavedModel:
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, F.SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def read_signature_defs(export_dir: str) -> dict:
    """signature name -> SignatureDef of an exported model's 'serve' meta graph (protos only, nothing loaded)."""
    for meta_graph in _read_saved_model(export_dir).meta_graphs:
        if not meta_graph.meta_info_def.tags or "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{export_dir} has no meta graph tagged 'serve'")


def _set_method_name(export_dir: str, signature: str, method_name: str) -> None:
    """tf.saved_model.save marks every signature 'predict'; TF Serving's Classify API needs 'classify'."""
    path = os.path.join(export_dir, F.SAVED_MODEL_FILE)
    saved_model = _read_saved_model(export_dir)
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[signature].method_name = method_name
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
