"""The `fraudctl` click group; each command lives in its own module and is added here."""
from __future__ import annotations

import os
import warnings

import click

from fraud import features as F
from fraudctl.decide import decide
from fraudctl.generate import generate
from fraudctl.pipeline_run import pipeline
from fraudctl.report import report
from fraudctl.score import score
from fraudctl.serve import serve, serve_config

# google-api-core warns about Python 3.10 on every import of TFX; the stack is pinned (see README).
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # Beam worker processes too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", F.TF_QUIET_LOG_LEVEL)  # before anything imports TensorFlow


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Fraud detection for luxury restaurants in Peru: data, TFX pipeline, scoring."""


for command in (generate, pipeline, report, score, serve, serve_config, decide):
    main.add_command(command)

if __name__ == "__main__":
    main()
