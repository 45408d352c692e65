"""The whole `fraudctl pipeline run` at scale: wall time per component and for the rest of the command (start-up,
the report), rows/s, peak memory (PSS) of the process tree; optionally several Beam modes on the same data.

    .venv/bin/python bench/pipeline_scale.py [--rows 1000000] [--days 90] \
        [--mode default --mode multi_processing --mode in_memory] [--keep DIR]

Data: `fraudctl generate` sized to about --rows rows over --days days. Each mode runs the real command on the
same data into its own pipeline root; per-component seconds come from ML Metadata (fraud.runs). The reference,
measured in the same run on the same rows: the in-memory computation of the behavioural features
(fraud.behaviour.compute_columns, one process, no Beam) and the in-memory ingestion (fraud.ingest read +
standardise): each component's ratio to it says what the pipeline machinery costs.
Targets (issue: "Any data set that meets the contract"): 1M rows end to end in <= 10 minutes and <= 8 GiB.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fraud import features as F  # noqa: E402
from fraud import synth  # noqa: E402

FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (forked Beam workers share most of theirs) are counted once overall."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory_bytes(pid: int) -> int:
    """Memory of a process and all its descendants (Beam workers included): the sum of their PSS, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _pss_bytes(p)
        todo.extend(children.get(p, []))
    return total


def run_watched(cmd: list[str], log: Path) -> tuple[int, float, int]:
    """(exit code, seconds, peak memory (PSS) of the tree), printing a progress line every 30 s."""
    began = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    last = began
    while proc.poll() is None:
        peak = max(peak, tree_memory_bytes(proc.pid))
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"    ... {last - began:.0f} s, {peak / 2**30:.1f} GiB peak so far", flush=True)
        time.sleep(0.5)
    return proc.returncode, time.perf_counter() - began, peak


def references(data: Path) -> dict[str, float]:
    """Seconds of the plain in-memory work on the same rows: ingestion, behavioural features."""
    from fraud import behaviour, ingest

    began = time.perf_counter()
    frame = ingest.standardise(ingest.read_csv_dir(data), require_label=True).frame
    ingest_s = time.perf_counter() - began
    began = time.perf_counter()
    behaviour.compute_columns(behaviour.columns_of_frame(frame))
    return {F.NODE_EXAMPLE_GEN: ingest_s, F.NODE_BEHAVIOUR: time.perf_counter() - began, "rows": len(frame)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--mode", action="append", choices=["default", "multi_processing", "in_memory"],
                        help="DirectRunner mode(s) to run; default: the pipeline's own Beam arguments")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--keep", type=Path, help="keep data and runs here (default: a temporary directory)")
    parser.add_argument("--data", type=Path, help="run on this data folder instead of generating (e.g. "
                                                  "python -m fraud.synth.terminals DIR --rows N --terminals N)")
    args = parser.parse_args()
    modes = args.mode or ["default"]
    from fraud.runs import summarize

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        data = args.data or base / "data"
        users = max(100, round(args.rows / (synth.ROWS_PER_CARD_DAY * args.days)))
        if not data.exists():
            print(f"generating ~{args.rows:,} rows ({users:,} cards, {args.days} days)...", flush=True)
            began = time.perf_counter()
            subprocess.run([FRAUDCTL, "generate", "--out", str(data), "--users", str(users), "--days",
                            str(args.days)], check=True, stdout=subprocess.DEVNULL)
            print(f"  generated in {time.perf_counter() - began:.0f} s", flush=True)
        print("reference: the same work in memory, one process...", flush=True)
        ref = references(data)
        rows = int(ref.pop("rows"))
        print(f"{rows:,} rows; in memory: ingestion {ref[F.NODE_EXAMPLE_GEN]:.1f} s, behavioural features "
              f"{ref[F.NODE_BEHAVIOUR]:.1f} s", flush=True)
        for mode in modes:
            root, serving = base / f"root-{mode}", base / f"serving-{mode}"
            cmd = [FRAUDCTL, "pipeline", "run", "--data", str(data), "--root", str(root), "--serving-dir",
                   str(serving)]
            if mode != "default":
                cmd += ["--beam-arg=--runner=DirectRunner", f"--beam-arg=--direct_running_mode={mode}",
                        f"--beam-arg=--direct_num_workers={2 if mode == 'multi_processing' else 1}"]
            if args.train_steps:
                cmd += ["--train-steps", str(args.train_steps)]
            print(f"\nmode {mode}: {' '.join(cmd[1:3])} ...", flush=True)
            code, wall, peak = run_watched(cmd, base / f"run-{mode}.log")
            summary = summarize(str(root / F.METADATA_FILE), F.PIPELINE_NAME)
            print(f"  exit {code}, {wall:.0f} s end to end ({rows / wall:,.0f} rows/s), peak {peak / 2**30:.2f} GiB "
                  f"(targets for 1M rows: <= 600 s, <= 8 GiB)")
            components = 0.0
            for c in summary.components:
                if c.seconds < 0.5:
                    continue
                components += c.seconds
                ratio = f"  {c.seconds / ref[c.node_id]:.1f}x the in-memory reference" if c.node_id in ref else ""
                print(f"  {c.node_id:<28} {c.state:<9} {c.seconds:7.1f} s {rows / c.seconds:>10,.0f} rows/s{ratio}")
            print(f"  {'(start-up, report, rest)':<28} {'':<9} {wall - components:7.1f} s")
            print_models(summary)
            if code != 0:
                print(f"  the run failed: see {base / f'run-{mode}.log'}" + ("" if args.keep else
                                                                             " (use --keep DIR to keep it)"))
                print("  " + "\n  ".join((base / f"run-{mode}.log").read_text().splitlines()[-15:]))


def print_models(summary) -> None:
    """The candidate against the reference gate's models on the eval split (the issue's measure)."""
    names = (F.METRIC_PR_AUC, F.METRIC_ROC_AUC, F.METRIC_RECALL_AT_1PCT_FPR, F.METRIC_CARD_PRECISION)
    if not summary.candidate:
        return
    print(f"  {'model (eval split)':<28} " + " ".join(f"{n:>20}" for n in names) + f" {'seconds':>8}")
    trainer = summary.component(F.NODE_TRAINER)
    rows = [("candidate", summary.candidate, trainer.seconds if trainer else float("nan"))]
    gate = summary.reference
    if gate is not None:
        rows += [(r.name, r.metrics, r.seconds) for r in gate.references]
    for name, metrics, seconds in rows:
        print(f"  {name:<28} " + " ".join(f"{metrics.get(n, float('nan')):>20.4f}" for n in names)
              + f" {seconds:>8.1f}")
    if gate is not None:
        print(f"  reference gate {gate.reason}; blessed: {gate.blessed}")


if __name__ == "__main__":
    main()
