"""Batch scoring with a pushed model, for backtesting: the same standardisation as training, then the
model's serving_default signature (so Transform runs inside the model, exactly as in serving)."""
from __future__ import annotations

from datetime import date
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud import atomic, behaviour, ingest, timeutil
from fraud import features as F
from fraud.errors import DataContractError, ModelNotFound

__all__ = ["ModelNotFound", "ScoreResult", "load_signature", "model_inputs", "resolve_version_dir", "score_csv",
           "score_frame", "signature_inputs"]
BATCH = 4096


@dataclass
class ScoreResult:
    rows: int
    model_version_dir: Path
    history_rows: int = 0


def resolve_version_dir(model_dir: Path) -> Path:
    """A version dir (has saved_model.pb) or a base dir of numeric versions (the newest wins)."""
    model_dir = Path(model_dir)
    if (model_dir / F.SAVED_MODEL_FILE).exists():
        return model_dir
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / F.SAVED_MODEL_FILE).exists()]
    if not versions:
        nested = model_dir / F.MODEL_NAME
        if nested.is_dir():
            return resolve_version_dir(nested)
        raise ModelNotFound(f"no model in {str(model_dir)!r}: expected saved_model.pb or numeric version folders")
    return max(versions, key=lambda p: int(p.name))


def load_signature(version_dir: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(version_dir)).signatures[F.SERVING_SIGNATURE]


_NUMPY = {"float": np.float32, "int": np.int64, "string": object}


def model_inputs(frame: pd.DataFrame, keys) -> dict[str, np.ndarray]:
    return {k: (frame[k].astype(str) if F.input_kind(k) == "string" else frame[k]).to_numpy(_NUMPY[F.input_kind(k)])
            for k in keys}


def signature_inputs(signature) -> list[str]:
    return list(signature.structured_input_signature[1])


# Nine significant digits: every float32 score is written exactly (scores of legitimate rows sit around 1e-6, and
# six decimals printed many of them as 0, losing their order).
SCORE_FORMAT = "%.9g"


def score_frame(signature, frame: pd.DataFrame) -> np.ndarray:
    import tensorflow as tf

    inputs = model_inputs(frame, signature_inputs(signature))
    scores = []
    for start in range(0, len(frame), BATCH):
        batch = {k: tf.constant(v[start:start + BATCH]) for k, v in inputs.items()}
        scores.append(signature(**batch)[F.SCORE_OUTPUT].numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def score_csv(model_dir: Path, input_csv: Path, output_csv: Path, from_date: date | None = None) -> ScoreResult:
    """Score every row (or only rows on/after `from_date`, Lima calendar day: earlier rows serve as history).

    Behavioural features come from the history in the input itself, point-in-time, as in training; labels in the
    input (blanks allowed) feed the delayed-label features (the restaurant's fraud rate) as in the pipeline.
    """
    version_dir = resolve_version_dir(model_dir)
    raw = pd.read_csv(input_csv, dtype=str, keep_default_na=False, na_values=[])
    standard = behaviour.add_behaviour_columns(ingest.standardise(raw, require_label=False).frame)
    if from_date is not None:
        standard = standard[standard[F.EVENT_TIME] >= timeutil.lima_midnight_utc(from_date)]
        if standard.empty:
            raise DataContractError(f"no transactions on or after {from_date} in {str(input_csv)!r}")
    scores = score_frame(load_signature(version_dir), standard)
    result = pd.DataFrame({F.TRANSACTION_ID: standard[F.TRANSACTION_ID], "score": scores})
    with atomic.atomic_path(output_csv) as tmp:  # a failure never leaves a half-written file behind
        result.to_csv(tmp, index=False, float_format=SCORE_FORMAT)
    return ScoreResult(len(result), version_dir)
