"""One synthetic transaction in the model's raw-input format, for client examples and tests.

Keys come from fraud.features (the single source of names and input kinds); the values are made up (never
customer data). An application sends one such dict per transaction, after the same standardisation as
ingestion: amount in the row's currency (NaN when missing), event time as UTC epoch seconds, "" for a
missing string, and the behavioural features computed from the card's, device's and restaurant's history.
"""
from __future__ import annotations

from fraud import features as F

_SINGLE_ROW_VALUES = {
    F.AMOUNT: 185.0,
    F.USER_AGE: 41.0,
    F.EVENT_TIME: 1780709400,  # 2026-06-05 20:30 Lima
    F.CURRENCY: "PEN",
    F.PAYMENT_METHOD: "credit_card",
    F.TRANSACTION_TYPE: "dine_in",
    F.CITY: "Lima",
    F.HOME_CITY: "Lima",
    F.USER_GENDER: "F",
    F.DEVICE_TYPE: "pos_terminal",
    F.OS_VERSION: "pos_fw_5.2",
    F.RESTAURANT_ID: "R001",
}
_DEFAULT_BY_KIND = {"float": 0.0, "int": 0, "string": F.MISSING}


def example_transaction(keys=None, **overrides) -> dict:
    """{input: value} for `keys` (default: fraud.features.MODEL_INPUTS); `overrides` replace values."""
    keys = tuple(F.MODEL_INPUTS if keys is None else keys)
    unknown = set(overrides) - set(keys)
    if unknown:
        raise KeyError(f"not model inputs: {sorted(unknown)}")
    # The behavioural features of a first-time card (cold start): what the decision service would send for it.
    row = {k: _SINGLE_ROW_VALUES.get(k, F.FIRST_TRANSACTION_FEATURES.get(k, _DEFAULT_BY_KIND[F.input_kind(k)]))
           for k in keys}
    row.update(overrides)
    return row


def typed(row: dict) -> dict:
    """JSON-safe values of the right kind: floats for float inputs (a JSON `150` is an integer, which
    classify's tf.Example would store as int64 and the model then rejects), ints for int inputs."""
    cast = {"float": float, "int": int, "string": str}
    return {k: cast[F.input_kind(k)](v) for k, v in row.items()}
