"""The reference gate's models (fraud.reference) at scale: seconds and peak memory for --rows train rows with
--restaurants terminal ids, and what each model learns from the ids alone.

    .venv/bin/python bench/reference_scale.py [--rows 1000000] [--eval-rows 50000] [--restaurants 10000] [--json]

Synthetic columns, every model input present: 2% of the terminals are compromised (8% fraud, against 0.4%
elsewhere, all year), and the amount carries a weaker signal; every other input is noise. A terminal is visible
to the models only through its id: a logistic regression on hashed ids can learn each compromised terminal, a
dense one-hot of 10,000 ids at a million rows would need 40+ GB. The reference, measured in the same run: a
logistic regression on the amount alone (no ids), which shows what the ids add.
Printed: seconds, eval PR-AUC / ROC-AUC per model, the process's peak RSS. `--json` prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from fraud import features as F  # noqa: E402
from fraud import reference as R  # noqa: E402


def synthetic(rows: int, restaurants: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = np.array([f"T{i:05d}" for i in range(restaurants)], dtype=object)
    compromised = rng.random(restaurants) < 0.02
    which = rng.integers(0, restaurants, rows)
    amount = rng.lognormal(4.5, 0.8, rows)
    logit = np.where(compromised[which], np.log(0.08 / 0.92), np.log(0.004 / 0.996)) + 0.6 * (np.log(amount) - 4.5)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    cols = {k: rng.random(rows).astype(np.float32) for k in R.numeric_inputs(F.FEATURE_SET_BEHAVIOURAL)}
    cols[F.AMOUNT] = amount.astype(np.float32)
    cols[F.USER_AGE] = np.where(rng.random(rows) < 0.1, np.nan, rng.integers(18, 80, rows)).astype(np.float32)
    for k in F.CATEGORICAL_FEATURES:
        cols[k] = np.array(["a", "b", "c", F.MISSING], dtype=object)[rng.integers(0, 4, rows)]
    cols[F.RESTAURANT_ID] = ids[which]
    cols[F.EVENT_TIME] = np.sort(rng.integers(1_780_000_000, 1_780_000_000 + 90 * F.DAY_S, rows))
    cols[F.USER_ID] = np.array([f"U{i}" for i in rng.integers(0, max(rows // 50, 1), rows)], dtype=object)
    cols[F.LABEL] = label
    return cols


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--eval-rows", type=int, default=50_000)
    ap.add_argument("--restaurants", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from sklearn.linear_model import LogisticRegression

    from fraud.eval_config import build_eval_config
    from fraud.report.metrics import tfma_metrics_from_scores

    started = time.time()
    every = synthetic(args.rows + args.eval_rows, args.restaurants, seed=1)  # the last rows (in time) are eval
    train = {k: v[:args.rows] for k, v in every.items()}
    evals = {k: v[args.rows:] for k, v in every.items()}
    del every
    print(f"data: {args.rows:,} train rows ({int(train[F.LABEL].sum()):,} fraud), {args.eval_rows:,} eval rows, "
          f"{args.restaurants:,} terminals ({time.time() - started:.1f} s)", file=sys.stderr, flush=True)
    config = build_eval_config(pr_auc_floor=0.0, regression_tolerance=1.0, operating_threshold=0.3)
    results = R.run_references(train, evals, config, feature_set=F.FEATURE_SET_BEHAVIOURAL,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
    t = time.time()
    amount_only = LogisticRegression(max_iter=200).fit(np.log(train[F.AMOUNT]).reshape(-1, 1), train[F.LABEL])
    scores = amount_only.predict_proba(np.log(evals[F.AMOUNT]).reshape(-1, 1))[:, 1]
    import pandas as pd

    ref, _ = tfma_metrics_from_scores(evals[F.LABEL], scores, config,
                                      pd.DataFrame({F.USER_ID: evals[F.USER_ID], F.EVENT_TIME: evals[F.EVENT_TIME]}))
    out = {"rows": args.rows, "eval_rows": args.eval_rows, "restaurants": args.restaurants,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "amount_only": {"pr_auc": float(ref[F.METRIC_PR_AUC]), "roc_auc": float(ref[F.METRIC_ROC_AUC]),
                           "seconds": time.time() - t},
           "references": {r.name: {"pr_auc": r.metrics.get(F.METRIC_PR_AUC), "roc_auc": r.metrics.get(F.METRIC_ROC_AUC),
                                   "seconds": r.seconds, "error": r.error, "detail": r.detail} for r in results}}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'model':<26} {'PR-AUC':>8} {'ROC-AUC':>8} {'seconds':>8}")
        print(f"{'amount only (reference)':<26} {out['amount_only']['pr_auc']:>8.4f} "
              f"{out['amount_only']['roc_auc']:>8.4f} {out['amount_only']['seconds']:>8.1f}")
        for name, r in out["references"].items():
            if r["error"]:
                print(f"{name:<26} FAILED: {r['error']}")
            else:
                print(f"{name:<26} {r['pr_auc']:>8.4f} {r['roc_auc']:>8.4f} {r['seconds']:>8.1f}")
        print(f"peak RSS {out['peak_rss_gib']:.2f} GiB")
    return out


if __name__ == "__main__":
    main()
