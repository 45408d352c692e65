"""`fraudctl report`: rebuild the HTML evaluation report of a past run from ML Metadata (fraud.report)."""
from __future__ import annotations

from pathlib import Path

import click

from fraud.errors import ReportError
from fraudctl.options import fail


@click.command()
@click.option("--root", "pipeline_root", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Pipeline root of the run (the --root of `fraudctl pipeline run`).")
@click.option("--out", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="HTML file to write [default: ROOT/reports/<run id>.html].")
@click.option("--run", "run_id", default=None, help="Run id as printed in the summary [default: the latest].")
def report(pipeline_root: Path, out, run_id):
    """Build the HTML evaluation report of a past run from ML Metadata (one file, opens offline)."""
    from fraud.report import report_main

    try:
        report_main(pipeline_root, out, run_id=run_id, echo=click.echo)
    except ReportError as exc:
        fail(exc)
