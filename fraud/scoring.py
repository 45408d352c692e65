"""Batch scoring with a pushed model, for backtesting: the same standardisation as training, then the
model's serving_default signature (so Transform runs inside the model, exactly as in serving)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud import features as F
from fraud import ingest

BATCH = 4096


class ModelNotFound(ValueError):
    pass


@dataclass
class ScoreResult:
    rows: int
    model_version_dir: Path


def resolve_version_dir(model_dir: Path) -> Path:
    """A version dir (has saved_model.pb) or a base dir of numeric versions (the newest wins)."""
    model_dir = Path(model_dir)
    if (model_dir / "saved_model.pb").exists():
        return model_dir
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()]
    if not versions:
        nested = model_dir / F.MODEL_NAME
        if nested.is_dir():
            return resolve_version_dir(nested)
        raise ModelNotFound(f"no model in {str(model_dir)!r}: expected saved_model.pb or numeric version folders")
    return max(versions, key=lambda p: int(p.name))


def load_signature(version_dir: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(version_dir)).signatures[F.SERVING_SIGNATURE]


def model_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for key in F.MODEL_INPUTS:
        if key in F.NUMERIC_FEATURES:
            out[key] = frame[key].to_numpy(np.float32)
        elif key == F.EVENT_TIME:
            out[key] = frame[key].to_numpy(np.int64)
        else:
            out[key] = frame[key].astype(str).to_numpy(object)
    return out


def score_frame(signature, frame: pd.DataFrame) -> np.ndarray:
    import tensorflow as tf

    inputs = model_inputs(frame)
    scores = []
    for start in range(0, len(frame), BATCH):
        batch = {k: tf.constant(v[start:start + BATCH]) for k, v in inputs.items()}
        scores.append(signature(**batch)[F.SCORE_OUTPUT].numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def score_csv(model_dir: Path, input_csv: Path, output_csv: Path) -> ScoreResult:
    version_dir = resolve_version_dir(model_dir)
    raw = pd.read_csv(input_csv, dtype=str, keep_default_na=False, na_values=[])
    standard = ingest.standardise(raw, require_label=False).frame
    scores = score_frame(load_signature(version_dir), standard)
    result = pd.DataFrame({F.TRANSACTION_ID: standard[F.TRANSACTION_ID], "score": scores})
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a failure never leaves a half-written file behind.
    fd, tmp = tempfile.mkstemp(dir=output_csv.parent, suffix=".tmp")
    os.close(fd)
    try:
        result.to_csv(tmp, index=False, float_format="%.6f")
        os.replace(tmp, output_csv)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ScoreResult(len(result), version_dir)
