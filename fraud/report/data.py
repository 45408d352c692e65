"""The data behind a run, read from its artifacts: which Examples the model was judged on, rows and fraud per
split, the anomalies the validation gate acts on, and the drift of every feature between train and eval."""
from __future__ import annotations

import json
import os

from fraud import features as F
from fraud import runs
from fraud.report.model import TOP_DRIFTS

# Not drift candidates: identifiers (always new), the event time (always moves in a time split) and the label
# (its shift is the fraud rate per split, shown in the data table).
_DRIFT_EXCLUDED = (F.TRANSACTION_ID, F.USER_ID, F.DEVICE_ID, F.IP_ADDRESS, F.EVENT_TIME, F.LABEL, F.FRAUD_SCENARIO)


def output(nodes: dict, node_id: str, key: str):
    """The first artifact of one component's output (None when the component did not run or wrote none)."""
    node = nodes.get(node_id)
    return node.artifact(key) if node is not None else None


def examples_artifact(nodes: dict):
    """The Examples the model was evaluated on: the Evaluator's input (with behavioural features when the pipeline
    adds them), else what StatisticsGen read, else the ingestion output (a run that stopped early)."""
    for node_id in (F.NODE_EVALUATOR, F.NODE_STATISTICS):
        node = nodes.get(node_id)
        if node is not None and node.artifact("examples", output=False) is not None:
            return node.artifact("examples", output=False)
    return output(nodes, F.NODE_EXAMPLE_GEN, "examples")


def split_rows(examples_artifact) -> dict:
    """split -> {rows, fraud, fraud_rate, days}, from the properties ingestion recorded on the Examples."""
    from fraud.threshold import split_days

    p = runs.props(examples_artifact)
    out = {}
    for split in F.SPLITS:
        if F.prop_rows(split) in p:
            rows, fraud = int(p[F.prop_rows(split)]), int(p[F.prop_fraud(split)])
            start, end = p.get(F.prop_start(split)), p.get(F.prop_end(split))
            days = split_days([start, end]) if start is not None and end is not None else None
            out[split] = {"rows": rows, "fraud": fraud, "fraud_rate": fraud / max(rows, 1), "days": days}
    return out


def _split_names(statistics_artifact) -> list[str]:
    names = runs.props(statistics_artifact).get("split_names", "")
    return json.loads(names) if names else []  # TFX stores them as a JSON list


def list_anomalies(nodes: dict) -> list | None:
    """The anomalies the validation gate acts on (per split, plus eval-vs-train drift); None if not checked."""
    stats = output(nodes, F.NODE_STATISTICS, "statistics")
    schema = output(nodes, F.NODE_SCHEMA, "schema")
    anomalies = output(nodes, F.NODE_EXAMPLE_VALIDATOR, "anomalies")
    if stats is None or schema is None or anomalies is None:
        return None
    import tensorflow_data_validation as tfdv

    from fraud.validation import find_anomalies

    return find_anomalies(stats.uri, anomalies.uri, tfdv.load_schema_text(os.path.join(schema.uri, F.SCHEMA_FILE)),
                          _split_names(stats))


def _read_stats(statistics_uri: str, split: str):
    import tensorflow as tf

    from fraud.validation import read_statistics

    if not tf.io.gfile.exists(os.path.join(F.split_dir(statistics_uri, split), F.FEATURE_STATS_FILE)):
        return None
    return read_statistics(statistics_uri, split)


def run_drifts(nodes: dict) -> list[dict]:
    """feature_drifts() of the run's StatisticsGen output against its schema ([] when either is missing)."""
    stats, schema = output(nodes, F.NODE_STATISTICS, "statistics"), output(nodes, F.NODE_SCHEMA, "schema")
    if stats is None or schema is None:
        return []
    return feature_drifts(stats.uri, os.path.join(schema.uri, F.SCHEMA_FILE))


def feature_drifts(statistics_uri: str, schema_path: str, top: int = TOP_DRIFTS) -> list[dict]:
    """Drift of every feature between train and eval, measured by TFDV itself (L-infinity distance for
    categorical features, Jensen-Shannon divergence for numeric ones), largest first.

    The schema's comparators are set on every feature with an unreachable threshold, so TFDV measures them all
    without raising anomalies; the schema's own limit is shown next to each (every model input has one), with
    whether crossing it stops the pipeline (F.DRIFT_BLOCKING_FEATURES) or warns. Every drift over its limit is
    kept, even beyond the top `top`.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    train, evals = _read_stats(statistics_uri, F.SPLIT_TRAIN), _read_stats(statistics_uri, F.SPLIT_EVAL)
    if train is None or evals is None:
        return []
    schema = tfdv.load_schema_text(schema_path)
    gate = {}
    for f in schema.feature:
        if f.HasField("drift_comparator"):
            c = f.drift_comparator
            gate[f.name] = (c.infinity_norm.threshold if c.HasField("infinity_norm")
                            else c.jensen_shannon_divergence.threshold)
        f.ClearField("drift_comparator")
        if f.name in _DRIFT_EXCLUDED:
            continue
        if f.type == schema_pb2.BYTES:
            f.drift_comparator.infinity_norm.threshold = 1e9
        else:
            f.drift_comparator.jensen_shannon_divergence.threshold = 1e9
    anomalies = tfdv.validate_statistics(evals, schema, previous_statistics=train)
    details = _drift_details(train.datasets[0], evals.datasets[0])
    out = []
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for m in info.drift_measurements:
            measure = "L-infinity" if m.type == m.L_INFTY else "Jensen-Shannon"
            limit = gate.get(name)
            out.append({"feature": name, "measure": measure, "value": float(m.value), "limit": limit,
                        "blocks": name in F.DRIFT_BLOCKING_FEATURES,
                        "over_limit": limit is not None and float(m.value) > limit, "detail": details.get(name, "")})
    out.sort(key=lambda d: -d["value"])
    return out[:max(top, sum(d["over_limit"] for d in out))]


def _drift_details(train, evals) -> dict:
    """A plain-words hint per feature: mean train -> eval, or the value whose share moved most."""
    def by_name(ds):
        return {".".join(f.path.step) or f.name: f for f in ds.features}

    tr, ev = by_name(train), by_name(evals)
    out = {}
    for name, f in tr.items():
        g = ev.get(name)
        if g is None:
            continue
        if f.HasField("num_stats"):
            out[name] = f"mean {f.num_stats.mean:,.4g} -> {g.num_stats.mean:,.4g}"
        elif f.HasField("string_stats"):
            def shares(feat):
                total = feat.string_stats.common_stats.num_non_missing or 1
                return {b.label: b.sample_count / total for b in feat.string_stats.rank_histogram.buckets}
            a, b = shares(f), shares(g)
            if a or b:
                value = max(set(a) | set(b), key=lambda v: abs(a.get(v, 0) - b.get(v, 0)))
                out[name] = f"{value or '(empty)'}: {a.get(value, 0):.1%} -> {b.get(value, 0):.1%}"
    return out
