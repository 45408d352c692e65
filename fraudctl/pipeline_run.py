"""`fraudctl pipeline run`: the TFX pipeline with LocalDagRunner (pipeline.local_runner).

Options map one-to-one onto fraud.settings.PipelineSettings fields, whose defaults and descriptions are the
ones shown here; a value not given on the command line comes from `--settings FILE` (its `pipeline` section),
then from FRAUD_<FIELD> environment variables, then from the default.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fraud import features as F
from fraud.errors import SettingsError
from fraud.settings import PipelineSettings, load_pipeline_settings
from fraudctl.options import fail, help_of, ranged

# field -> option flag, where the flag is not --<field with dashes>.
_FLAGS = {"data_dir": "--data", "pipeline_root": "--root", "beam_args": "--beam-arg"}


def option_name(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _setting(field: str, type_=None, extra_help: str = "", **kwargs):
    return click.option(option_name(field), field, default=None, type=ranged(PipelineSettings, field, type_),
                        help=help_of(PipelineSettings, field, extra_help), **kwargs)


@click.group()
def pipeline():
    """Run the TFX pipeline."""


@pipeline.command("run")
@click.option("--data", "data_dir", default=None,
              help="Directory of transactions CSVs, or an SQLAlchemy URL (sqlite:///PATH, postgresql://...); "
                   "see README: data contract. Required (here, in --settings or as FRAUD_DATA_DIR).")
@click.option("--root", "pipeline_root", default=None, type=click.Path(path_type=Path),
              help="Pipeline root: artifacts and ML Metadata (kept between runs: the baseline lives here). Required.")
@click.option("--serving-dir", "serving_dir", default=None, type=click.Path(path_type=Path),
              help=f"TF Serving model base: versions land in DIR/{F.MODEL_NAME}/<version>/. Required.")
@_setting("eval_days", int)
@_setting("valid_days", int)
@_setting("train_steps", int)
@_setting("pr_auc_floor", float)
@_setting("min_valid_roc_auc", float)
@_setting("regression_tolerance", float)
@_setting("reference_tolerance", float)
@_setting("alerts_per_day", float)
@_setting("decline_precision", float)
@_setting("feature_set", click.Choice(F.FEATURE_SETS))
@_setting("label_delay_days", int)
@click.option("--beam-arg", "beam_args", multiple=True,
              help="Beam pipeline argument, repeatable (replaces the default: DirectRunner in one process), "
                   "e.g. --beam-arg=--direct_running_mode=multi_processing --beam-arg=--direct_num_workers=2.")
@click.option("--settings", "settings_file", default=None, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML/JSON file with a `pipeline` section of these settings (the options win over it).")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow/Beam/TFX logs on the terminal.")
def pipeline_run(settings_file, verbose, **options):
    """Run ingestion -> behavioural features -> validation -> Transform -> Trainer -> operating threshold ->
    Evaluator -> reference gate -> Pusher.

    Exit status: 0 pushed, 3 not blessed (nothing pushed), 4 data rejected, 1 other failure, 2 bad usage.
    """
    import os

    given = {k: v for k, v in options.items() if v is not None and v != ()}
    if "beam_args" in given:
        given["beam_args"] = tuple(given["beam_args"])
    try:
        settings = load_pipeline_settings(given, file=settings_file, environ=os.environ, option_name=option_name)
    except SettingsError as exc:
        fail(exc)
    from pipeline.local_runner import run_pipeline

    sys.exit(run_pipeline(settings, echo=click.echo, verbose=verbose).exit_code)
