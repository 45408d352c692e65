"""`fraudctl score`: batch scoring of a transactions CSV with a pushed model, for backtests (fraud.scoring)."""
from __future__ import annotations

from pathlib import Path

import click

from fraud.errors import FraudError
from fraudctl.options import date_option, fail


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A pushed model: a version dir, or the model base dir (its newest version is used).")
@click.option("--input", "input_csv", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Transactions CSV (same contract as training; the label is not needed).")
@click.option("--output", "output_csv", required=True, type=click.Path(path_type=Path),
              help="Where to write transaction_id,score.")
@click.option("--from", "from_date", default=None, callback=date_option,
              help="Score only rows on or after this Lima date (YYYY-MM-DD); earlier rows serve as history.")
def score(model_dir: Path, input_csv: Path, output_csv: Path, from_date):
    """Score a transactions CSV with a pushed model (backtesting).

    Behavioural features are computed from the history in the input, point-in-time, as in training.
    """
    from fraud import scoring

    try:
        result = scoring.score_csv(model_dir, input_csv, output_csv, from_date)
    except FraudError as exc:
        fail(exc)
    click.echo(f"Scored {result.rows} transactions with {result.model_version_dir} -> {output_csv}")
