"""Data quality on a stream, one transaction at a time, from the same curated schema the pipeline validates with
(schema/schema.pbtxt) and the training statistics of the model being served (StatisticsGen's FeatureStats.pb).

- RecordChecks: a standardised transaction against the schema. A value outside a numeric feature's domain, or a
  string outside a domain the schema holds strictly (min_domain_mass 1), makes the event invalid (the consumer
  sends it to the dead letters with these reasons). Strings outside a domain that tolerates a share of other
  values are only counted (`out_of_domain`), as TFDV's distribution constraint allows them in a dataset.
- DriftWindow: the last hour of events (event time) against the training statistics, per feature with a
  drift comparator in the schema, by the schema's own measure: Jensen-Shannon divergence over the training
  histogram's buckets (numbers) and the L-infinity distance between value frequencies (strings), each with its
  limit from the schema.

No TensorFlow: only the schema and statistics protos (tensorflow_metadata), so a consumer starts in a second.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fraud import features as F
from fraud.errors import FraudError

WINDOW_S = 3600


def read_schema(path: str | Path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    try:
        return text_format.Parse(Path(path).read_text(), schema_pb2.Schema())
    except (OSError, text_format.ParseError) as exc:
        raise FraudError(f"cannot read the schema {str(path)!r}: {exc}") from None


def read_statistics(path: str | Path):
    """A FeatureStats.pb file, or a pipeline root / StatisticsGen artifact folder: its newest train split."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob(f"Split-{F.SPLIT_TRAIN}/FeatureStats.pb"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FraudError(f"no training statistics (Split-{F.SPLIT_TRAIN}/FeatureStats.pb) under {str(path)!r}: "
                             "give a pipeline root or a StatisticsGen output")
        path = found[-1]
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        stats.ParseFromString(path.read_bytes())
    except OSError as exc:
        raise FraudError(f"cannot read the training statistics {str(path)!r}: {exc}") from None
    return stats


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass
class RecordChecks:
    numeric: dict = field(default_factory=dict)  # feature -> (min or None, max or None)
    strict_domains: dict = field(default_factory=dict)  # feature -> allowed values (min_domain_mass 1)
    loose_domains: dict = field(default_factory=dict)  # feature -> allowed values (a share of others tolerated)

    @classmethod
    def from_schema(cls, schema) -> "RecordChecks":
        domains = {d.name: frozenset(d.value) for d in schema.string_domain}
        checks = cls()
        for feat in schema.feature:
            kind = feat.WhichOneof("domain_info")
            if kind in ("float_domain", "int_domain"):
                dom = getattr(feat, kind)
                checks.numeric[feat.name] = (dom.min if dom.HasField("min") else None,
                                             dom.max if dom.HasField("max") else None)
            elif kind in ("domain", "string_domain"):
                values = domains.get(feat.domain) if kind == "domain" else frozenset(feat.string_domain.value)
                if values is None:
                    continue
                mass = feat.distribution_constraints.min_domain_mass if feat.HasField(
                    "distribution_constraints") else 1.0
                (checks.strict_domains if mass >= 1.0 else checks.loose_domains)[feat.name] = values
        return checks

    def problems(self, values: dict) -> tuple[list[str], list[str]]:
        """(reasons the event is invalid, features whose value is outside a tolerant domain)."""
        bad, outside = [], []
        for name, (low, high) in self.numeric.items():
            value = values.get(name)
            if not _is_number(value) or math.isnan(value):
                continue  # absent (NaN): imputed, as in training
            if (low is not None and value < low) or (high is not None and value > high):
                bad.append(f"{name}={value:g} is outside the schema's range [{low if low is not None else '-inf'}, "
                           f"{high if high is not None else 'inf'}]")
        for name, allowed in self.strict_domains.items():
            value = values.get(name)
            if isinstance(value, str) and value != F.MISSING and value not in allowed:
                bad.append(f"{name}={value!r} is not in the schema's domain ({', '.join(sorted(allowed))})")
        for name, allowed in self.loose_domains.items():
            value = values.get(name)
            if isinstance(value, str) and value != F.MISSING and value not in allowed:
                outside.append(name)
        return bad, outside


@dataclass
class _Reference:
    kind: str  # "numeric" (JS over buckets) or "string" (L-infinity)
    limit: float
    edges: np.ndarray | None = None  # numeric: inner bucket edges
    edges_list: list | None = None
    expected: np.ndarray | None = None  # numeric: training share per bucket
    shares: dict | None = None  # string: training share per value


def _training_references(schema, stats) -> dict[str, _Reference]:
    limits = {}
    for feat in schema.feature:
        if not feat.HasField("drift_comparator"):
            continue
        comp = feat.drift_comparator
        if comp.HasField("jensen_shannon_divergence"):
            limits[feat.name] = comp.jensen_shannon_divergence.threshold
        elif comp.HasField("infinity_norm"):
            limits[feat.name] = comp.infinity_norm.threshold
    refs = {}
    dataset = stats.datasets[0] if stats.datasets else None
    for feat in (dataset.features if dataset is not None else []):
        name = feat.path.step[0] if feat.path.step else feat.name
        if name not in limits:
            continue
        if feat.HasField("num_stats"):
            standard = [h for h in feat.num_stats.histograms if h.type == h.STANDARD]
            if not standard or not standard[0].buckets:
                continue
            buckets = standard[0].buckets
            counts = np.array([b.sample_count for b in buckets], dtype=np.float64)
            if counts.sum() <= 0:
                continue
            edges = np.array([b.high_value for b in buckets[:-1]], dtype=np.float64)
            refs[name] = _Reference("numeric", limits[name], edges=edges, edges_list=edges.tolist(),
                                    expected=counts / counts.sum())
        elif feat.HasField("string_stats"):
            ranked = feat.string_stats.rank_histogram.buckets
            pairs = [(b.label, b.sample_count) for b in ranked] or [
                (t.value, t.frequency) for t in feat.string_stats.top_values]
            total = sum(c for _, c in pairs)
            if total <= 0:
                continue
            refs[name] = _Reference("string", limits[name], shares={v: c / total for v, c in pairs})
    return refs


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two distributions over the same buckets."""
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class DriftWindow:
    """The last `window_s` seconds (event time) of each monitored feature, compared with training. Counts are
    kept per minute (bucket counts for numbers, value counts for strings), so memory does not grow with the rate."""

    BIN_S = 60

    def __init__(self, schema, stats, window_s: int = WINDOW_S):
        self.references = _training_references(schema, stats)
        self.window_s = window_s
        self._bins: dict[int, dict] = {}  # minute -> feature -> bucket counts (np array) or Counter
        self.latest = None

    def add(self, time_s: int, values: dict) -> None:
        import bisect

        minute = int(time_s) // self.BIN_S
        counts = self._bins.get(minute)
        if counts is None:
            counts = self._bins[minute] = {}
        for name, ref in self.references.items():
            value = values.get(name)
            if ref.kind == "numeric" and _is_number(value) and not math.isnan(value):
                bucket = counts.get(name)
                if bucket is None:
                    bucket = counts[name] = np.zeros(len(ref.expected), np.int64)
                bucket[bisect.bisect_right(ref.edges_list, float(value))] += 1
            elif ref.kind == "string" and isinstance(value, str) and value != F.MISSING:
                counts.setdefault(name, collections.Counter())[value] += 1
        self.latest = int(time_s) if self.latest is None else max(self.latest, int(time_s))
        oldest = (self.latest - self.window_s) // self.BIN_S
        for old in [m for m in self._bins if m <= oldest]:
            del self._bins[old]

    def distances(self) -> dict[str, tuple[float, float, int]]:
        """feature -> (distance, limit, events in the window with a value)."""
        out = {}
        for name, ref in self.references.items():
            parts = [counts[name] for counts in self._bins.values() if name in counts]
            if not parts:
                continue
            if ref.kind == "numeric":
                total = np.sum(parts, axis=0).astype(np.float64)
                n = int(total.sum())
                out[name] = (_js_divergence(total / n, ref.expected), ref.limit, n)
            else:
                seen = collections.Counter()
                for part in parts:
                    seen.update(part)
                n = sum(seen.values())
                keys = set(seen) | set(ref.shares)
                out[name] = (max(abs(seen.get(k, 0) / n - ref.shares.get(k, 0.0)) for k in keys), ref.limit, n)
        return out


__all__ = ["DriftWindow", "RecordChecks", "WINDOW_S", "read_schema", "read_statistics"]
