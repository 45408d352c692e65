"""One pipeline run three ways, in one run of this script, on the same data: `fraudctl pipeline run`, the Airflow
DAG under `make airflow` (SequentialExecutor, SQLite), and the DAG on two Celery workers (`make airflow` with
FRAUD_AIRFLOW_EXECUTOR=celery: PostgreSQL and Redis started here). Printed: the wall time of each, from the start
(fraudctl) or the unpause that starts the scheduled run (Airflow) to the end of the run, and each Airflow figure as a ratio of fraudctl's.
Airflow's start-up (compiling the plan, the database, the webserver) is printed apart: it is paid once per
deployment, not per run.

    .venv/bin/python bench/airflow_run_bench.py [--data DIR] [--train-steps 150] [--skip-celery]

Target (issue): a DAG run takes at most 1.5x `fraudctl pipeline run`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from airflow_client import AirflowProcess  # noqa: E402


def fraudctl_run(data: Path, work: Path, steps: int) -> float:
    began = time.perf_counter()
    proc = subprocess.run([str(REPO / ".venv/bin/fraudctl"), "pipeline", "run", "--data", str(data), "--root",
                           str(work / "root"), "--serving-dir", str(work / "serving"), "--train-steps", str(steps)],
                          capture_output=True, text=True)
    took = time.perf_counter() - began
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"fraudctl pipeline run failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return took


def airflow_run(data: Path, work: Path, steps: int, **extra) -> tuple[float, float, dict]:
    env = dict(FRAUD_DATA_DIR=str(data), FRAUD_PIPELINE_ROOT=str(work / "root"),
               FRAUD_SERVING_DIR=str(work / "serving"), FRAUD_TRAIN_STEPS=str(steps), **extra)
    began = time.perf_counter()
    with AirflowProcess(work / "airflow_home", env) as airflow:
        ready = time.perf_counter() - began
        began = time.perf_counter()
        run_id = airflow.start_run()
        states = airflow.wait(run_id, timeout=3600)
        took = time.perf_counter() - began
    if not all(state == "success" for state, *_ in states.values()):
        raise RuntimeError(f"the DAG run failed: {states}")
    return ready, took, states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a CSV folder (default: a small generated data set)")
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airflow-bench-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:  # the test suite's small data set (tests/helpers.py SMALL_DATA)
            data = tmp / "data"
            subprocess.run([str(REPO / ".venv/bin/fraudctl"), "generate", "--out", str(data), "--days", "45",
                            "--users", "1500", "--seed", "7"], check=True, capture_output=True)
        print(f"data: {data}", flush=True)
        base = fraudctl_run(data, tmp / "fraudctl", args.train_steps)
        print(f"fraudctl pipeline run: {base:.0f} s", flush=True)
        if not args.skip_sequential:
            ready, took, _ = airflow_run(data, tmp / "sequential", args.train_steps)
            print(f"Airflow, SequentialExecutor (make airflow): start-up {ready:.0f} s; DAG run {took:.0f} s = "
                  f"{took / base:.2f}x fraudctl", flush=True)
        if not args.skip_celery:
            from local_servers import RedisServer, database_url, postgres_server

            (tmp / "redis").mkdir()
            redis = RedisServer(tmp / "redis")
            redis.start()
            try:
                with postgres_server() as admin:
                    db = database_url(admin, "af")
                    ready, took, _ = airflow_run(data, tmp / "celery", args.train_steps, FRAUD_AIRFLOW_EXECUTOR="celery",
                                                 FRAUD_AIRFLOW_DB=db, FRAUD_AIRFLOW_BROKER=redis.url(0))
            finally:
                redis.stop()
            print(f"Airflow, CeleryExecutor, 2 workers: start-up {ready:.0f} s; DAG run {took:.0f} s = "
                  f"{took / base:.2f}x fraudctl", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
