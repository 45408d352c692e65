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


_DECISION_OPTIONS = [
    click.option("--serving", required=True, help="TF Serving gRPC endpoint, e.g. grpc://127.0.0.1:8500."),
    click.option("--state", default="memory://", show_default=True,
                 help="Online state: memory:// (in-process, lost on exit) or redis://HOST:6379/0 (AOF on)."),
    click.option("--model-dir", type=click.Path(path_type=Path, file_okay=False),
                 help=f"The serving dir's <serving-dir>/{F.MODEL_NAME}: each version's shipped operating threshold "
                      "is read from there."),
    click.option("--review-threshold", type=click.FloatRange(0, 1),
                 help="Review above this score (default: the served version's shipped operating threshold)."),
    click.option("--decline-threshold", type=click.FloatRange(0, 1),
                 help="Decline above this score (default: the served version's shipped decline threshold, chosen "
                      f"by the pipeline for --decline-precision; {D.DEFAULT_DECLINE_THRESHOLD} if it ships none)."),
    click.option("--rules", "rules_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="Business rules (YAML): block-listed cards/devices, amount caps per city."),
    click.option("--deadline-ms", default=150.0, show_default=True, type=click.FloatRange(min=1),
                 help="Deadline of the model call; beyond it the answer is degraded (rules only)."),
    click.option("--canary-label", help="Also score with this TF Serving version label, in the shadow."),
    click.option("--labels-db", help="The pipeline's database source (SQLAlchemy URL, e.g. sqlite:////abs/tx.db): "
                                     "labels posted to /v1/labels are appended to its labels table for the next run."),
    click.option("--alert-webhook", help="POST every alert (review / decline) as JSON to this URL as well."),
    click.option("--serving-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="TLS to the model server (fraudctl serve --ssl-config-file): PEM of the CA that signed it."),
    click.option("--serving-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="With --serving-ca, for a server that verifies clients: this service's PEM certificate."),
    click.option("--serving-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="With --serving-cert: its PEM private key."),
]
_DECISION_FIELDS = ("serving", "state", "model_dir", "review_threshold", "decline_threshold", "rules_file",
                    "deadline_ms", "canary_label", "labels_db", "alert_webhook", "serving_ca", "serving_cert",
                    "serving_key")


def decision_options(command):
    """The options every front end of the decision service takes (the same names as DecisionOptions)."""
    for option in reversed(_DECISION_OPTIONS):
        command = option(command)
    return command


def _decision_options_from(kwargs: dict):
    from decision.service import DecisionOptions

    return DecisionOptions(**{name: kwargs.pop(name) for name in _DECISION_FIELDS})


@decide.command("serve")
@decision_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8600, show_default=True, type=click.IntRange(0, 65535), help="HTTP port (0: any).")
def serve(host, port, **kwargs):
    """Serve POST /v1/decisions, POST /v1/labels, GET /v1/alerts, /healthz and /metrics."""
    from decision.main import serve as run

    sys.exit(run(_decision_options_from(kwargs), host, port, echo=click.echo))


@decide.command("consume")
@click.option("--source", required=True,
              help="Transactions: redis://HOST:6379/DB/STREAM (Redis Streams) or kafka://HOST:9092/TOPIC.")
@click.option("--decisions", required=True, help="Where decisions go (same URL forms as --source).")
@click.option("--alerts", help="Where alerts (review / decline) go as well.")
@click.option("--dead-letters", help="Where invalid transactions go, with the reason [default: the source's "
                                     "stream or topic name + '-dead-letters', on the same broker].")
@decision_options
@click.option("--group", default="fraud-decisions", show_default=True, help="Consumer group.")
@click.option("--consumer", help="This consumer's name in the group [default: the host name]; give each "
                                 "consumer on one host its own.")
@click.option("--batch", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="Messages read and decided at once.")
@click.option("--landing", type=click.Path(path_type=Path, file_okay=False),
              help="Land decided transactions here as hourly CSV files, labelled after the label delay: a "
                   "`--data` folder for `fraudctl pipeline run` and the Airflow DAG.")
@click.option("--label-delay-days", default=F.LABEL_DELAY_DAYS, show_default=True, type=click.IntRange(0, 365),
              help="An hour lands once the stream is this far past it (chargebacks posted by then are joined).")
@click.option("--training-stats", type=click.Path(path_type=Path, exists=True),
              help="Training statistics for the drift gauges: a pipeline root (its newest train statistics) or "
                   "a FeatureStats.pb file.")
@click.option("--drift-window-minutes", default=60, show_default=True, type=click.IntRange(1, 60 * 24 * 31),
              help="The drift gauges compare this much of the latest event time with training.")
@click.option("--schema", "schema_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The curated schema events are checked against [default: the repository's schema].")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
@click.option("--idle-exit-seconds", type=click.FloatRange(min=0),
              help="Stop after this long without a message (default: run until Ctrl-C / SIGTERM).")
def consume(source, decisions, alerts, dead_letters, group, consumer, batch, landing, label_delay_days,
            training_stats, drift_window_minutes, schema_file, metrics_port, idle_exit_seconds, **kwargs):
    """Decide transactions from a stream (Redis Streams or Kafka) into a decisions stream, as POST /v1/decisions
    would; invalid ones go to a dead-letter stream with the reason."""
    import asyncio
    import logging

    from decision.consumer import ConsumerOptions, consume as run
    from fraud.errors import FraudError
    from fraud.settings import DEFAULT_SCHEMA_FILE

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = ConsumerOptions(source=source, decisions=decisions, alerts=alerts, dead_letters=dead_letters,
                              group=group, consumer=consumer, batch=batch, landing=landing,
                              label_delay_days=label_delay_days, schema_file=schema_file or DEFAULT_SCHEMA_FILE,
                              training_stats=training_stats, drift_window_s=drift_window_minutes * 60,
                              idle_exit_s=idle_exit_seconds)
    try:
        asyncio.run(run(options, _decision_options_from(kwargs), echo=click.echo, metrics_port=metrics_port))
    except FraudError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)


@decide.command("publish")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Transactions (CSV dir), sent in event-time order.")
@click.option("--to", "target", required=True, help="redis://HOST:6379/DB/STREAM or kafka://HOST:9092/TOPIC.")
@click.option("--without-labels/--with-labels", default=True, show_default=True,
              help="Leave out is_fraudulent and fraud_scenario, as a live stream has them not.")
def publish(data_dir, target, without_labels):
    """Send a CSV folder's transactions to a stream, one message each, in event-time order (demo, tests)."""
    from decision.stream import publish_csv
    from fraud.errors import FraudError

    try:
        n = publish_csv(data_dir, target, without_labels=without_labels)
    except FraudError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"Published {n:,} transactions to {target}")


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
