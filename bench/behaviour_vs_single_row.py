"""PR-AUC of the behavioural model against the single-row model, same data, same time split.

    .venv/bin/python bench/behaviour_vs_single_row.py [--days 90 --users 4000 --train-steps 1000]

Runs the real pipeline twice (fraudctl pipeline run --feature-set single_row | behavioural) into fresh
roots, so neither has a baseline, and prints each model's eval-split metrics and the ratio.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from fraud.synth import datagen
from fraud import features as F
from fraud.runs import summarize

FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-steps", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        datagen.generate(data, days=args.days, users=args.users, seed=args.seed)
        for feature_set in F.FEATURE_SETS:
            root = Path(tmp) / feature_set
            print(f"running the pipeline with --feature-set {feature_set} ...", flush=True)
            proc = subprocess.run([FRAUDCTL, "pipeline", "run", "--data", data, "--root", root / "root",
                                   "--serving-dir", root / "serving", "--train-steps", str(args.train_steps),
                                   "--feature-set", feature_set, "--pr-auc-floor", "0"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"pipeline failed for {feature_set}:\n{proc.stdout[-3000:]}")
            results[feature_set] = summarize(str(root / "root" / F.METADATA_FILE), F.PIPELINE_NAME).candidate
    names = (F.METRIC_PR_AUC, F.METRIC_ROC_AUC, "recall_at_1pct_fpr", F.METRIC_PRECISION, F.METRIC_RECALL)
    single, behavioural = results[F.FEATURE_SET_SINGLE_ROW], results[F.FEATURE_SET_BEHAVIOURAL]
    print(f"\n{'metric (eval split)':<22} {'single-row':>11} {'behavioural':>12} {'ratio':>7}")
    for name in names:
        ratio = behavioural[name] / single[name] if single[name] else float("nan")
        print(f"{name:<22} {single[name]:>11.4f} {behavioural[name]:>12.4f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
