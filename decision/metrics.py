"""The decision service's Prometheus metrics (prometheus_client, its own registry): names defined once here."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

DECISIONS = Counter("fraud_decisions_total", "Decisions by outcome and model version",
                    ["decision", "model_version"], registry=REGISTRY)
ALERTS = Counter("fraud_alerts_total", "Alerts raised (review and decline)", ["decision"], registry=REGISTRY)
DEGRADED = Counter("fraud_decisions_degraded_total", "Decisions taken without the model (unreachable in time)",
                   registry=REGISTRY)
MODEL_ERRORS = Counter("fraud_model_call_errors_total", "Model calls that failed or timed out", registry=REGISTRY)
LABELS = Counter("fraud_labels_total", "Labels (chargebacks / confirmations) received", ["is_fraudulent"],
                 registry=REGISTRY)
REJECTED = Counter("fraud_requests_rejected_total", "Requests refused (4xx) by reason", ["status"],
                   registry=REGISTRY)
STATE_CONFLICTS = Counter("fraud_state_conflicts_total", "State transactions retried after a concurrent update",
                          registry=REGISTRY)
WEBHOOK = Counter("fraud_alert_webhook_total", "Alerts POSTed to the webhook, by result (sent, failed, dropped)",
                  ["result"], registry=REGISTRY)
SCORES = Histogram("fraud_score", "Model scores of decided transactions", registry=REGISTRY,
                   buckets=(1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99))
DECISION_LATENCY = Histogram("fraud_decision_latency_seconds", "Time to decide one transaction",
                             registry=REGISTRY, buckets=_LATENCY_BUCKETS)
MODEL_LATENCY = Histogram("fraud_model_call_latency_seconds", "gRPC Predict call to the model server",
                          registry=REGISTRY, buckets=_LATENCY_BUCKETS)
STATE_LATENCY = Histogram("fraud_state_latency_seconds", "State store read or commit", registry=REGISTRY,
                          buckets=_LATENCY_BUCKETS)

# The stream consumer (decision/consumer.py)
STREAM_MESSAGES = Counter("fraud_stream_messages_total",
                          "Stream messages handled, by outcome (decided, replayed, dead_letter)", ["outcome"],
                          registry=REGISTRY)
STREAM_UNAVAILABLE = Counter("fraud_stream_unavailable_total",
                             "Batches put back because the broker or the state store could not be reached",
                             registry=REGISTRY)
STREAM_EVENT_LATENCY = Histogram("fraud_stream_event_to_decision_seconds",
                                 "From a transaction entering the stream (Redis entry time) to its decision written",
                                 registry=REGISTRY, buckets=_LATENCY_BUCKETS + (2.5, 5.0, 10.0))
STREAM_LAG = Gauge("fraud_stream_lag", "Messages of the source stream not yet decided (Redis consumer group lag "
                   "plus pending)", registry=REGISTRY)
STREAM_OUT_OF_DOMAIN = Counter("fraud_stream_out_of_domain_total",
                               "Values outside a schema domain that tolerates a share of other values",
                               ["feature"], registry=REGISTRY)
FEATURE_DRIFT = Gauge("fraud_stream_feature_drift", "Drift of the last hour of the stream against the training "
                      "statistics (the schema's measure: Jensen-Shannon or L-infinity)", ["feature"],
                      registry=REGISTRY)
FEATURE_DRIFT_LIMIT = Gauge("fraud_stream_feature_drift_limit", "The schema's drift limit of the feature",
                            ["feature"], registry=REGISTRY)
DRIFT_WINDOW_EVENTS = Gauge("fraud_stream_drift_window_events", "Transactions in the drift window", ["feature"],
                            registry=REGISTRY)
LANDED_FILES = Counter("fraud_landing_files_total", "Hourly files landed for training", registry=REGISTRY)
LANDING_PENDING_HOURS = Gauge("fraud_landing_pending_hours", "Hours staged, waiting for their label delay",
                              registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
