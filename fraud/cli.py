"""`fraudctl`: generate data, run the pipeline, score transactions. Each subcommand has --help."""
from __future__ import annotations

import os
import sys
import time
import warnings
from datetime import date, datetime
from pathlib import Path

import click

from fraud import features as F

# google-api-core warns about Python 3.10 on every import of TFX; the stack is pinned (see README).
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # Beam worker processes too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _date(ctx, param, value):
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Fraud detection for luxury restaurants in Peru: data, TFX pipeline, scoring."""


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to create with the transactions CSVs (must not exist or be empty).")
@click.option("--days", default=90, show_default=True, type=click.IntRange(14, 3650), help="Days of history.")
@click.option("--users", default=4000, show_default=True, type=click.IntRange(50, 10_000_000), help="Card holders.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed (same seed, same bytes).")
@click.option("--start", default="2026-06-01", show_default=True, callback=_date, help="First day, YYYY-MM-DD.")
@click.option("--sqlite", "sqlite_path", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the data set into this new SQLite file as normalized tables (transactions, users, "
                   "devices, restaurants; profiles with history); train on it with --data sqlite:////ABS/PATH.")
def generate(out_dir: Path, days: int, users: int, seed: int, start: date, sqlite_path: Path | None):
    """Write a synthetic, labelled transactions data set (CSV files, one per month; optionally SQLite)."""
    from fraud import datagen

    if sqlite_path is not None and sqlite_path.exists():  # checked before spending time on the CSVs
        raise click.ClickException(f"{sqlite_path} already exists; choose a new path for --sqlite")

    started = time.time()
    try:
        summary = datagen.generate(out_dir, days=days, users=users, seed=seed, start=start,
                                   progress=lambda msg: click.echo(f"  {msg}"))
    except ValueError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"Wrote {summary.rows} transactions ({summary.fraud_rows} fraudulent, {summary.fraud_rate:.2%}) "
               f"from {summary.first_day} to {summary.last_day} into {out_dir} in {time.time() - started:.1f} s")
    for scenario, count in sorted(summary.scenarios.items()):
        click.echo(f"  {scenario:<24} {count}")
    if sqlite_path is not None:
        from fraud import sql_source

        try:
            db = sql_source.write_sqlite(out_dir, sqlite_path, seed=seed)
        except ValueError as exc:
            raise click.ClickException(str(exc))
        click.echo(f"Wrote {db.transactions} transactions, {db.user_profile_rows} user profile rows "
                   f"({db.moved_users} users move city), {db.device_profile_rows} device profile rows "
                   f"({db.upgraded_devices} OS upgrades) and {db.restaurants} restaurants into {sqlite_path} "
                   f"in {db.seconds:.1f} s; train on it with --data {db.url}")


@main.group()
def pipeline():
    """Run the TFX pipeline."""


@pipeline.command("run")
@click.option("--data", "data_dir", required=True,
              help="Directory of transactions CSVs, or an SQLAlchemy URL (sqlite:///PATH, postgresql://...); "
                   "see README: data contract.")
@click.option("--root", "pipeline_root", required=True, type=click.Path(path_type=Path),
              help="Pipeline root: artifacts and ML Metadata (kept between runs: the baseline lives here).")
@click.option("--serving-dir", required=True, type=click.Path(path_type=Path),
              help=f"TF Serving model base: versions land in DIR/{F.MODEL_NAME}/<version>/.")
@click.option("--eval-days", default=7, show_default=True, type=int, help="Last N days form the eval split.")
@click.option("--valid-days", default=7, show_default=True, type=int,
              help="N days before eval form the validation split (early stopping).")
@click.option("--train-steps", default=1000, show_default=True, type=int, help="Maximum training steps.")
@click.option("--pr-auc-floor", default=0.2, show_default=True, type=float, help="Blessing: minimum PR-AUC.")
@click.option("--regression-tolerance", default=0.02, show_default=True, type=float,
              help="Blessing: largest allowed drop in PR-AUC/ROC-AUC against the last blessed model.")
@click.option("--operating-threshold", default=0.3, show_default=True, type=float,
              help="Score above which a transaction is flagged (precision/recall reported there).")
@click.option("--alerts-per-day", default=50.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Alert budget: the operating threshold is the lowest score threshold with at most this many "
                   "alerts per day on the valid split; it is recorded with the model.")
@click.option("--feature-set", type=click.Choice(F.FEATURE_SETS), default=F.FEATURE_SET_BEHAVIOURAL,
              show_default=True, help="Model inputs: single-row features only, or with behavioural history.")
@click.option("--label-delay-days", default=F.LABEL_DELAY_DAYS, show_default=True, type=int,
              help="Fraud labels younger than this are unknown to the restaurant fraud-rate feature.")
@click.option("--beam-arg", "beam_args", multiple=True,
              help="Beam pipeline argument, repeatable (replaces the default DirectRunner multi-processing "
                   "on 2 workers), e.g. --beam-arg=--runner=FlinkRunner.")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow/Beam/TFX logs on the terminal.")
def pipeline_run(beam_args, verbose, **kwargs):
    """Run ingestion -> validation -> Transform -> Trainer -> Evaluator -> Pusher.

    Exit status: 0 pushed, 3 not blessed (nothing pushed), 4 data rejected, 1 other failure, 2 bad usage.
    """
    from pydantic import ValidationError

    from fraud.settings import PipelineSettings

    try:
        settings = PipelineSettings(**kwargs, **({"beam_args": tuple(beam_args)} if beam_args else {}))
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            click.echo(f"Error: {where.replace('_', '-')}: {err['msg']}", err=True)
        sys.exit(2)
    from pipeline.local_runner import run_pipeline

    sys.exit(run_pipeline(settings, echo=click.echo, verbose=verbose).exit_code)


@main.command()
@click.option("--root", "pipeline_root", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Pipeline root of the run (the --root of `fraudctl pipeline run`).")
@click.option("--out", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="HTML file to write [default: ROOT/reports/<run id>.html].")
@click.option("--run", "run_id", default=None, help="Run id as printed in the summary [default: the latest].")
def report(pipeline_root: Path, out, run_id):
    """Build the HTML evaluation report of a past run from ML Metadata (one file, opens offline)."""
    from fraud.report_cli import ReportError, report_main

    try:
        report_main(pipeline_root, out, run_id=run_id, echo=click.echo)
    except ReportError as exc:
        raise click.ClickException(str(exc))


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A pushed model: a version dir, or the model base dir (its newest version is used).")
@click.option("--input", "input_csv", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Transactions CSV (same contract as training; the label is not needed).")
@click.option("--output", "output_csv", required=True, type=click.Path(path_type=Path),
              help="Where to write transaction_id,score.")
@click.option("--from", "from_date", default=None, callback=_date,
              help="Score only rows on or after this Lima date (YYYY-MM-DD); earlier rows serve as history.")
def score(model_dir: Path, input_csv: Path, output_csv: Path, from_date):
    """Score a transactions CSV with a pushed model (backtesting).

    Behavioural features are computed from the history in the input, point-in-time, as in training.
    """
    from fraud import scoring
    from fraud.ingest import DataContractError

    try:
        result = scoring.score_csv(model_dir, input_csv, output_csv, from_date)
    except (DataContractError, scoring.ModelNotFound) as exc:
        raise click.ClickException(str(exc))
    click.echo(f"Scored {result.rows} transactions with {result.model_version_dir} -> {output_csv}")


from fraud.serve_cli import serve_command  # noqa: E402 - options only; the server imports lazily

main.add_command(serve_command, "serve")

if __name__ == "__main__":
    main()
