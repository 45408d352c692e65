"""`fraudctl generate`: the synthetic, labelled data set (fraud.synth)."""
from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import click

from fraud import synth
from fraud.errors import FraudError
from fraudctl.options import date_option, fail


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to create with the transactions CSVs (must not exist or be empty).")
@click.option("--days", default=synth.DEFAULT_DAYS, show_default=True, type=click.IntRange(synth.MIN_DAYS, 3650),
              help="Days of history.")
@click.option("--users", default=synth.DEFAULT_USERS, show_default=True,
              type=click.IntRange(synth.MIN_USERS, 10_000_000), help="Card holders.")
@click.option("--seed", default=synth.DEFAULT_SEED, show_default=True, type=click.IntRange(min=0),
              help="Random seed (same seed, same bytes).")
@click.option("--start", default=synth.DEFAULT_START.isoformat(), show_default=True, callback=date_option,
              help="First day, YYYY-MM-DD.")
@click.option("--sqlite", "sqlite_path", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the data set into this new SQLite file as normalized tables (transactions, users, "
                   "devices, restaurants; profiles with history); train on it with --data sqlite:////ABS/PATH.")
def generate(out_dir: Path, days: int, users: int, seed: int, start: date, sqlite_path: Path | None):
    """Write a synthetic, labelled transactions data set (CSV files, one per month; optionally SQLite)."""
    from fraud.synth import datagen

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
        from fraud.synth import database

        try:
            db = database.write_sqlite(out_dir, sqlite_path, seed=seed)
        except FraudError as exc:
            fail(exc)
        click.echo(f"Wrote {db.transactions} transactions, {db.user_profile_rows} user profile rows "
                   f"({db.moved_users} users move city), {db.device_profile_rows} device profile rows "
                   f"({db.upgraded_devices} OS upgrades) and {db.restaurants} restaurants into {sqlite_path} "
                   f"in {db.seconds:.1f} s; train on it with --data {db.url}")
