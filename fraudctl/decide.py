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
@click.option("--decline-threshold", type=click.FloatRange(0, 1),
              help="Decline above this score (default: the served version's shipped decline threshold, chosen by "
                   f"the pipeline for --decline-precision; {D.DEFAULT_DECLINE_THRESHOLD} if it ships none).")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Business rules (YAML): block-listed cards/devices, amount caps per city.")
@click.option("--deadline-ms", default=150.0, show_default=True, type=click.FloatRange(min=1),
              help="Deadline of the model call; beyond it the answer is degraded (rules only).")
@click.option("--canary-label", help="Also score with this TF Serving version label, in the shadow.")
@click.option("--labels-db", help="The pipeline's database source (SQLAlchemy URL, e.g. sqlite:////abs/tx.db): "
                                  "labels posted to /v1/labels are appended to its labels table for the next run.")
@click.option("--alert-webhook", help="POST every alert (review / decline) as JSON to this URL as well.")
@click.option("--serving-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TLS to the model server (fraudctl serve --ssl-config-file): PEM of the CA that signed it.")
@click.option("--serving-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="With --serving-ca, for a server that verifies clients: this service's PEM certificate.")
@click.option("--serving-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="With --serving-cert: its PEM private key.")
def serve(serving, state, host, port, model_dir, review_threshold, decline_threshold, rules_file, deadline_ms,
          canary_label, labels_db, alert_webhook, serving_ca, serving_cert, serving_key):
    """Serve POST /v1/decisions, POST /v1/labels, GET /v1/alerts, /healthz and /metrics."""
    from decision.main import serve as run
    from decision.service import DecisionOptions

    options = DecisionOptions(serving=serving, state=state, model_dir=model_dir, review_threshold=review_threshold,
                              decline_threshold=decline_threshold, rules_file=rules_file, deadline_ms=deadline_ms,
                              canary_label=canary_label, labels_db=labels_db,
                              alert_webhook=alert_webhook, serving_ca=serving_ca, serving_cert=serving_cert,
                              serving_key=serving_key)
    sys.exit(run(options, host, port, echo=click.echo))


@decide.command("replay")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Transactions (CSV dir) with labels, e.g. runs/demo/data.")
@click.option("--model-base", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help=f"<serving-dir>/{F.MODEL_NAME}: the pushed versions and their thresholds.")
@click.option("--serving", help="A running TF Serving gRPC endpoint; without it the local server is started "
                                "on --model-base for the replay.")
@click.option("--days", default=1, show_default=True, type=click.IntRange(1, 31), help="Last days to replay.")
def replay(data_dir, model_base, serving, days):
    """Replay the data's last day(s) through the live path (model server + decision service, embedded state)
    and print the decisions per outcome, example reasons and the alerts raised."""
    import asyncio
    import tempfile

    from decision.replay import format_summary, replay as run_replay
    from decision.service import DecisionOptions
    from fraud.errors import FraudError

    server = None
    if serving is None:
        from serving.process import start_server

        click.echo(f"Starting the local model server on {model_base} ...")
        server = start_server(model_base, Path(tempfile.mkdtemp(prefix="replay_")) / "server.log")
        serving = server.grpc_target
    try:
        options = DecisionOptions(serving=serving, model_dir=model_base, deadline_ms=2000)
        summary = asyncio.run(run_replay(data_dir, options, days=days, progress=click.echo))
    except FraudError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    finally:
        if server is not None:
            server.stop()
    click.echo(format_summary(summary))
