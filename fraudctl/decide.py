"""`fraudctl decide serve`: the real-time decision service (decision/) in front of a TF Serving gRPC endpoint."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fraud import decisions as D
from fraud import features as F


@click.group("decide")
def decide():
    """Real-time decisions: one raw transaction in, approve / review / decline with reasons out."""


@decide.command("serve")
@click.option("--serving", required=True, help="TF Serving gRPC endpoint, e.g. grpc://127.0.0.1:8500.")
@click.option("--state", default="memory://", show_default=True,
              help="Online state: memory:// (in-process, lost on exit) or redis://HOST:6379/0 (AOF on).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8600, show_default=True, type=click.IntRange(0, 65535), help="HTTP port (0: any).")
@click.option("--model-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"The serving dir's <serving-dir>/{F.MODEL_NAME}: each version's shipped operating threshold "
                   "is read from there.")
@click.option("--review-threshold", type=click.FloatRange(0, 1),
              help="Review above this score (default: the served version's shipped operating threshold).")
@click.option("--decline-threshold", default=D.DEFAULT_DECLINE_THRESHOLD, show_default=True,
              type=click.FloatRange(0, 1), help="Decline above this score.")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Business rules (YAML): block-listed cards/devices, amount caps per city.")
@click.option("--deadline-ms", default=150.0, show_default=True, type=click.FloatRange(min=1),
              help="Deadline of the model call; beyond it the answer is degraded (rules only).")
@click.option("--canary-label", help="Also score with this TF Serving version label, in the shadow.")
def serve(serving, state, host, port, model_dir, review_threshold, decline_threshold, rules_file, deadline_ms,
          canary_label):
    """Serve POST /v1/decisions, POST /v1/labels, GET /v1/alerts, /healthz and /metrics."""
    from decision.main import serve as run
    from decision.service import DecisionOptions

    options = DecisionOptions(serving=serving, state=state, model_dir=model_dir, review_threshold=review_threshold,
                              decline_threshold=decline_threshold, rules_file=rules_file, deadline_ms=deadline_ms,
                              canary_label=canary_label)
    sys.exit(run(options, host, port, echo=click.echo))
