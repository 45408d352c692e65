"""How long Airflow takes to parse the fraud-detection DAG file, against `dagbag_import_timeout`.

The scheduler parses DAG files in fresh processes, every few minutes, and every task parses the file again; a
file that takes longer than [core] dagbag_import_timeout (Airflow's default: 30 s) is an import error and its DAG
disappears. This DAG file does not import TFX: it reads the pipeline compiled once (pipeline/airflow_plan.py).
Printed: the time to compile that plan (once per settings and code, TFX imported), then each parse, and whether
the parse imported TFX, TensorFlow or Beam (it must not).

Each measurement runs in a fresh Python process, like the scheduler's DAG processor: it loads the DAG folder
with airflow.models.DagBag (fresh AIRFLOW_HOME in a temp dir, the DAG file linked into its dags folder as
`make airflow` does) and reports Airflow's own figure for the file (DagBag.dagbag_stats, what
`airflow dags report` shows) and the wall time of the whole process.

    .venv/bin/python bench/dag_import_time.py              # 3 runs, human-readable
    .venv/bin/python bench/dag_import_time.py --runs 1 --json   # one run, JSON (tests/airflow/test_airflow_dag.py)
    .venv/bin/python bench/dag_import_time.py --breakdown  # also the slowest imports (python -X importtime)
    .venv/bin/python bench/dag_import_time.py --layout folder   # dags_folder = the repo's pipeline/ folder

Layouts of the dags folder (--layout): `link` (default: a symlink to pipeline/airflow_dag.py, as `make airflow`
does), `copy` (a copy of the file: the DAG imports only the installed project), `folder` (Airflow's dags_folder
is the repository's pipeline/ folder itself; pipeline/.airflowignore keeps Airflow to the DAG file).

The FRAUD_* settings are taken from the environment when set, otherwise temp paths are used (the data
folder need not exist to parse the DAG).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "pipeline" / "airflow_dag.py"
STANDALONE_SCRIPT = REPO / "scripts" / "airflow_standalone.sh"
AIRFLOW_DEFAULT_TIMEOUT = 30.0
LAYOUTS = ("link", "copy", "folder")

# Runs in the child process: parse the DAG folder, print one JSON line describing the result and the DAG.
_CHILD = r"""
import json, sys, time
started = time.perf_counter()
from airflow.models import DagBag
airflow_import = time.perf_counter() - started
bag = DagBag(include_examples=False)
load = time.perf_counter() - started
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("tfx", "tensorflow", "apache_beam")})
out = {"airflow_import_s": airflow_import, "dagbag_load_s": load, "heavy_modules_imported": heavy,
       "file_parse_s": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
       "import_errors": {k: v[-3000:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    def seconds(td):
        return None if td is None else td.total_seconds()
    out["dags"][dag_id] = {
        "schedule": str(dag.schedule_interval), "timetable": dag.timetable.summary,
        "timezone": str(dag.timezone.name), "start_date": dag.start_date.isoformat(),
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks, "dagrun_timeout_s": seconds(dag.dagrun_timeout),
        "params": {k: dag.params[k] for k in dag.params}, "tags": sorted(dag.tags or []),
        "tasks": {t.task_id: {
            "upstream": sorted(t.upstream_task_ids), "retries": t.retries,
            "retry_exponential_backoff": t.retry_exponential_backoff,
            "retry_delay_s": seconds(t.retry_delay), "max_retry_delay_s": seconds(t.max_retry_delay),
            "execution_timeout_s": seconds(t.execution_timeout), "owner": t.owner,
            "operator": type(t).__name__} for t in dag.tasks},
    }
print("DAGREPORT " + json.dumps(out, default=str))
"""


def configured_timeout() -> float:
    """The dagbag_import_timeout that `make airflow` sets (scripts/airflow_standalone.sh)."""
    text = STANDALONE_SCRIPT.read_text() if STANDALONE_SCRIPT.exists() else ""
    match = re.search(r"DAGBAG_IMPORT_TIMEOUT=\"?\$\{[A-Z_]+:-(\d+)\}", text)
    return float(match.group(1)) if match else AIRFLOW_DEFAULT_TIMEOUT


def dags_folder(home: Path, layout: str = "link") -> Path:
    """The dags folder for a layout (see the module docstring)."""
    if layout == "folder":
        return DAG_FILE.parent
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    target = dags / "fraud_detection_dag.py"
    if not target.exists():
        if layout == "copy":
            shutil.copy2(DAG_FILE, target)
        else:
            target.symlink_to(DAG_FILE)
    return dags


def child_env(home: Path, layout: str = "link") -> dict:
    home.mkdir(parents=True, exist_ok=True)
    dags = dags_folder(home, layout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="900",  # measure, don't abort
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db")
    for name, sub in (("FRAUD_DATA_DIR", "data"), ("FRAUD_PIPELINE_ROOT", "pipeline"),
                      ("FRAUD_SERVING_DIR", "serving")):
        env.setdefault(name, str(home / sub))
    return env


def measure_once(home: Path, layout: str = "link") -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=child_env(home, layout), capture_output=True,
                          text=True, timeout=900, cwd=home)
    wall = time.perf_counter() - started
    line = next((l for l in proc.stdout.splitlines() if l.startswith("DAGREPORT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"DagBag load failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(line[len("DAGREPORT "):])
    report["process_wall_s"] = wall
    parse = [v for k, v in report["file_parse_s"].items() if k.endswith(("fraud_detection_dag.py", DAG_FILE.name))]
    report["dag_file_parse_s"] = parse[0] if parse else None
    return report


def breakdown(home: Path, top: int = 12) -> list[tuple[float, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pipeline.airflow_dag"],
                          env=child_env(home), capture_output=True, text=True, timeout=900, cwd=home)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if m and len(m.group(2)) <= 7:  # top-level and a few levels down
            rows.append((int(m.group(1)) / 1e6, m.group(2)[1:] + m.group(3)))
    return sorted(rows, reverse=True)[:top]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object (last run's DAG report)")
    parser.add_argument("--breakdown", action="store_true", help="also list the slowest imports")
    parser.add_argument("--layout", choices=LAYOUTS, default="link", help="how the DAG file reaches the dags folder")
    args = parser.parse_args(argv)

    timeout = configured_timeout()
    with tempfile.TemporaryDirectory(prefix="dag-import-") as tmp:
        home = Path(tmp) / "airflow_home"
        began = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline.airflow_plan"], env=child_env(home, args.layout),
                              capture_output=True, text=True, timeout=900, cwd=REPO)
        compile_s = time.perf_counter() - began
        if proc.returncode != 0:
            raise RuntimeError(f"compiling the plan failed:\n{proc.stderr[-3000:]}")
        reports = [measure_once(home, args.layout) for _ in range(args.runs)]
        slow = breakdown(home) if args.breakdown else []
    parses = [r["dag_file_parse_s"] for r in reports if r["dag_file_parse_s"] is not None]
    try:
        load_avg = os.getloadavg()[0]
    except OSError:
        load_avg = None
    summary = {
        "runs": len(reports), "dag_file_parse_s": parses, "plan_compile_s": round(compile_s, 1),
        "heavy_modules_imported": sorted({m for r in reports for m in r["heavy_modules_imported"]}),
        "median_s": statistics.median(parses) if parses else None, "max_s": max(parses) if parses else None,
        "process_wall_s": [round(r["process_wall_s"], 1) for r in reports],
        "airflow_default_timeout_s": AIRFLOW_DEFAULT_TIMEOUT, "configured_timeout_s": timeout,
        "load_average_1min": load_avg, "cpus": os.cpu_count(),
        "import_errors": reports[-1]["import_errors"], "layout": args.layout,
        "parsed_files": sorted(reports[-1]["file_parse_s"]),
    }
    if args.json:
        print(json.dumps({**summary, "report": reports[-1], "slowest_imports": slow}))
        return 0 if not summary["import_errors"] else 1
    print(f"Compiling the pipeline once for the DAG (python -m pipeline.airflow_plan, imports TFX): "
          f"{summary['plan_compile_s']:.1f} s")
    print(f"DAG file parse time (Airflow's DagBag figure), {len(parses)} fresh process(es): "
          + ", ".join(f"{p:.1f} s" for p in parses))
    print(f"  median {summary['median_s']:.1f} s, max {summary['max_s']:.1f} s; whole process (Python + Airflow + "
          f"DAG): {', '.join(f'{w} s' for w in summary['process_wall_s'])}")
    print(f"  Airflow's default dagbag_import_timeout: {AIRFLOW_DEFAULT_TIMEOUT:.0f} s; "
          f"set by scripts/airflow_standalone.sh: {timeout:.0f} s")
    print(f"  modules imported by the parse among tfx, tensorflow, apache_beam: "
          f"{', '.join(summary['heavy_modules_imported']) or 'none'}")
    print(f"  machine: {os.cpu_count()} CPUs, 1-min load average {load_avg:.1f}" if load_avg is not None else "")
    if summary["import_errors"]:
        print("IMPORT ERRORS:\n" + "\n".join(summary["import_errors"].values()))
    for seconds, name in slow:
        print(f"  {seconds:6.2f} s  {name}")
    if summary["max_s"] is not None and summary["max_s"] > AIRFLOW_DEFAULT_TIMEOUT:
        print(f"  NOTE: above Airflow's default {AIRFLOW_DEFAULT_TIMEOUT:.0f} s: keep dagbag_import_timeout raised")
    return 0 if not summary["import_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
