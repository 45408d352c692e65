"""The one place where the serving metrics are defined: names, labels, buckets, and the text exposition.

Names and labels are TensorFlow Serving's own (tensorflow_serving/servables/tensorflow/util.cc,
saved_model_warmup_util.cc, tensorflow/cc/saved_model/loader.cc), with '/' replaced by ':' as its
Prometheus exporter does, so dashboards and alert rules work unchanged against the real
`tensorflow/serving` container and against our local server.

Why not `prometheus_client` (it is installed): it renames every counter to `<name>_total` and adds
`<name>_created` series, which would break the TF Serving names above. The text format is small, so the
exposition is written here, the way TF Serving's exporter writes it (`# TYPE` lines, no `# HELP`).

Our additions, which upstream lacks (users keep asking: tensorflow/serving#1970, #1959):
- a `model_version` label on request_count / request_latency / runtime_latency (empty when a request
  failed before a version was resolved; Prometheus treats an empty label as an absent one, so queries
  written for TF Serving's labels keep working);
- two gauges about what is being served, named outside the `:tensorflow:` namespace so nobody mistakes them
  for upstream metrics: `serving_model_version_available` and `serving_model_latest_version`. Against the
  real container the same two gauges come from `serving/status_exporter.py`.

This module only uses the standard library (status_exporter.py runs it in a slim container).
"""
from __future__ import annotations

import math
import threading
from typing import Iterable, Sequence

# ----------------------------------------------------------------------------------------------
# Buckets (TF's monitoring::Buckets::Exponential(scale, growth, count): count finite limits + "+Inf")
# ----------------------------------------------------------------------------------------------


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    return tuple(scale * growth ** i for i in range(count))


LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)  # 10 us .. ~20 minutes, as TF Serving
EXAMPLE_COUNT_BUCKETS = exponential_buckets(1, 2, 15)  # 1 .. 16384 examples, as TF Serving
QUEUING_LATENCY_BUCKETS_US = exponential_buckets(100, 1.2, 52)  # batching_session.cc: 100 us .. ~1 s

# ----------------------------------------------------------------------------------------------
# Label names and values
# ----------------------------------------------------------------------------------------------
MODEL_NAME = "model_name"
MODEL = "model"  # TF Serving uses "model" (not "model_name") on the example-count metrics
MODEL_VERSION = "model_version"  # ours
MODEL_PATH = "model_path"
STATUS = "status"
API = "API"
ENTRYPOINT = "entrypoint"
RUNTIME = "runtime"
THREAD_POOL_NAME = "thread_pool_name"
BATCH_THREAD_POOL = "batch_threads"  # the value of thread_pool_name: one shared pool, as TF Serving's default

ENTRYPOINT_REST = "REST"
ENTRYPOINT_GRPC = "GRPC"
RUNTIME_NAME = "TF2"  # TF Serving says "TF1" (session run); ours runs the SavedModel's tf.functions
# The model_name label of requests naming a model this server does not serve: one shared value, so that callers
# cannot create a series per name they make up (Prometheus keeps every series it has seen).
UNKNOWN_MODEL = "<unknown>"
LOAD_SUCCESS = "success"  # :tensorflow:cc:saved_model:load_attempt_count{status}
LOAD_FAIL = "fail"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, labels: Sequence[str], help: str = ""):
        self.name = name
        self.labels = tuple(labels)
        self.help = help  # only our own metrics have one: TF Serving prints no # HELP lines
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, ...], object] = {}

    def _key(self, values: dict[str, object]) -> tuple[str, ...]:
        unknown = set(values) - set(self.labels)
        if unknown:
            raise ValueError(f"{self.name}: unknown labels {sorted(unknown)}")
        return tuple("" if values.get(label) is None else str(values.get(label)) for label in self.labels)

    def _label_text(self, key: tuple[str, ...], extra: str = "") -> str:
        parts = [f'{name}="{_escape(value)}"' for name, value in zip(self.labels, key)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def clear(self) -> None:
        with self._lock:
            self._cells.clear()

    def exposition(self) -> list[str]:
        raise NotImplementedError

    def _header(self) -> list[str]:
        head = [f"# HELP {self.name} {self.help}"] if self.help else []
        return head + [f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        key = self._key(labels)
        with self._lock:
            self._cells[key] = self._cells.get(key, 0) + amount

    def value(self, **labels) -> float:
        with self._lock:
            return self._cells.get(self._key(labels), 0)

    def snapshot(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self._cells.items())

    def exposition(self) -> list[str]:
        with self._lock:
            cells = sorted(self._cells.items())
        lines = self._header()
        lines += [f"{self.name}{self._label_text(k)} {_number(v)}" for k, v in cells]
        return lines


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        key = self._key(labels)
        with self._lock:
            self._cells[key] = value

    def remove(self, **labels) -> None:
        with self._lock:
            self._cells.pop(self._key(labels), None)

    def replace_all(self, cells: Iterable[tuple[dict, float]]) -> None:
        """Swap in a whole new set of series atomically (a scrape never sees half of an update)."""
        new = {self._key(labels): value for labels, value in cells}
        with self._lock:
            self._cells = new


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, labels: Sequence[str], buckets: Sequence[float]):
        super().__init__(name, labels)
        self.buckets = tuple(buckets)

    def observe(self, value: float, **labels) -> None:
        key = self._key(labels)
        index = _bucket_index(self.buckets, value)
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = [[0] * (len(self.buckets) + 1), 0.0]
            cell[0][index] += 1
            cell[1] += value

    def count(self, **labels) -> int:
        with self._lock:
            cell = self._cells.get(self._key(labels))
            return sum(cell[0]) if cell else 0

    def exposition(self) -> list[str]:
        with self._lock:
            cells = sorted((k, (list(v[0]), v[1])) for k, v in self._cells.items())
        lines = self._header()
        limits = [_limit(b) for b in self.buckets] + ["+Inf"]
        for key, (counts, total) in cells:
            cumulative = 0
            for limit, n in zip(limits, counts):
                cumulative += n
                le = 'le="' + limit + '"'
                lines.append(f"{self.name}_bucket{self._label_text(key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{self._label_text(key)} {_number(total)}")
            lines.append(f"{self.name}_count{self._label_text(key)} {cumulative}")
        return lines


def _bucket_index(buckets: Sequence[float], value: float) -> int:
    for i, limit in enumerate(buckets):  # 33 buckets at most: a linear scan is fine
        if value <= limit:
            return i
    return len(buckets)


def _limit(value: float) -> str:
    return "%g" % value  # TF Serving prints limits with absl::StrCat(double): 6 significant digits


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53):
        return str(int(value))
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


# ----------------------------------------------------------------------------------------------
# The metrics
# ----------------------------------------------------------------------------------------------
class ServingMetrics:
    """All serving metrics of one server process. One instance per server (tests start several)."""

    def __init__(self):
        self.request_count = Counter(
            ":tensorflow:serving:request_count", (MODEL_NAME, STATUS, MODEL_VERSION))
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency", (MODEL_NAME, API, ENTRYPOINT, MODEL_VERSION), LATENCY_BUCKETS_US)
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency", (MODEL_NAME, API, RUNTIME, MODEL_VERSION), LATENCY_BUCKETS_US)
        self.request_example_counts = Histogram(
            ":tensorflow:serving:request_example_counts", (MODEL,), EXAMPLE_COUNT_BUCKETS)
        self.request_example_count_total = Counter(":tensorflow:serving:request_example_count_total", (MODEL,))
        self.model_warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency", (MODEL_PATH, STATUS), LATENCY_BUCKETS_US)
        self.load_latency = Counter(":tensorflow:cc:saved_model:load_latency", (MODEL_PATH,))  # a counter upstream
        self.load_attempt_count = Counter(":tensorflow:cc:saved_model:load_attempt_count", (MODEL_PATH, STATUS))
        self.model_version_available = Gauge(
            "serving_model_version_available", (MODEL_NAME, MODEL_VERSION),
            "1 if the model version is AVAILABLE, 0 if it is loading or failed to load.")
        self.model_latest_version = Gauge(
            "serving_model_latest_version", (MODEL_NAME,),
            "Newest AVAILABLE version of the model (TFX Pusher: its Unix push time).")
        # --enable_batching (serving/batching.py): TF Serving's batching_session metrics, and the batch sizes.
        self.batching_queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency", (THREAD_POOL_NAME,), QUEUING_LATENCY_BUCKETS_US)
        self.batching_wrapped_run_count = Counter(":tensorflow:serving:batching_session:wrapped_run_count", ())
        self.batching_batch_size = Histogram(
            "serving_batching_batch_size", (MODEL_NAME,), EXAMPLE_COUNT_BUCKETS)
        self.batching_batch_size.help = ("Rows per merged model call (padding included) with --enable_batching; "
                                         "requests per call is this over request_example_counts.")
        self.all = (self.request_count, self.request_latency, self.runtime_latency, self.request_example_counts,
                    self.request_example_count_total, self.model_warmup_latency, self.load_latency,
                    self.load_attempt_count, self.model_version_available, self.model_latest_version,
                    self.batching_queuing_latency, self.batching_wrapped_run_count, self.batching_batch_size)

    def exposition(self) -> str:
        lines: list[str] = []
        for metric in self.all:
            lines.extend(metric.exposition())
        return "\n".join(lines) + "\n"

    # Set by the server: name -> served? (None: every name is its own label value, as TF Serving does).
    model_known = None

    def record_request(self, *, model_name: str, api: str, entrypoint: str, status: str, latency_us: float,
                       model_version: int | None) -> None:
        if self.model_known is not None and not self.model_known(model_name):
            model_name = UNKNOWN_MODEL
        self.request_count.inc(model_name=model_name, status=status, model_version=model_version)
        self.request_latency.observe(latency_us, model_name=model_name, API=api, entrypoint=entrypoint,
                                     model_version=model_version)

    def set_versions(self, model_name: str, states: dict[int, bool]) -> None:
        """states: version -> available (True) / known but not available (False, e.g. failed to load)."""
        others = [(dict(zip(self.model_version_available.labels, key)), value)
                  for key, value in self.model_version_available.snapshot() if key[0] != model_name]
        mine = [({MODEL_NAME: model_name, MODEL_VERSION: v}, 1 if ok else 0) for v, ok in sorted(states.items())]
        self.model_version_available.replace_all(others + mine)
        available = [v for v, ok in states.items() if ok]
        if available:
            self.model_latest_version.set(max(available), model_name=model_name)
        else:
            self.model_latest_version.remove(model_name=model_name)

CONTENT_TYPE = "text/plain; version=0.0.4"  # Prometheus' text exposition format
