"""`make airflow` with the CeleryExecutor (FRAUD_AIRFLOW_EXECUTOR=celery), without Docker: real PostgreSQL (Airflow's
metadata database and Celery's result backend), real Redis (the broker), scripts/airflow_standalone.sh starting the
scheduler, the webserver and two Celery workers. The DAG is unpaused through the REST API (one scheduled run) on small data; one worker
is killed with SIGKILL while it runs a task, with every process under it (a dead host): the scheduler finds the task
gone, the retry runs on the other worker, and the run still pushes a model."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud import features as F
from tests.helpers import REPO, SMALL_TRAIN_STEPS, generate
from tests.servers import RedisServer, local_servers, postgres_server

sys.path.insert(0, str(REPO / "scripts"))
from airflow_client import AirflowProcess  # noqa: E402

pytestmark = pytest.mark.slow
KILL_DURING = "Transform"  # a long task in the middle of the run


def _kill_worker(n: int) -> int:
    """SIGKILL Celery worker n and every process under it, as if its host died: the worker, its pool process, and
    the task processes Airflow forked (each task runs in a process group of its own, so killing the worker's group
    alone would leave the task running, unsupervised, beside its retry). The number of processes killed."""
    [root] = subprocess.run(["pgrep", "-f", f"celery worker --celery-hostname worker{n}@%h"], capture_output=True,
                            text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    tree, todo = [], [int(root)]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(tree)


def test_celery_workers_run_the_dag_and_a_killed_workers_task_is_retried_on_the_other(tmp_path):
    redis = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    redis.start()
    with postgres_server() as admin_url:
        db = local_servers.database_url(admin_url, "airflow")
        data = generate(tmp_path / "data")
        env = dict(FRAUD_AIRFLOW_EXECUTOR="celery", FRAUD_AIRFLOW_DB=db, FRAUD_AIRFLOW_BROKER=redis.url(0),
                   FRAUD_DATA_DIR=str(data), FRAUD_PIPELINE_ROOT=str(tmp_path / "root"),
                   FRAUD_SERVING_DIR=str(tmp_path / "serving"), FRAUD_TRAIN_STEPS=str(SMALL_TRAIN_STEPS),
                   FRAUD_DAG_RETRY_DELAY_SECONDS="5", FRAUD_DAG_MAX_RETRY_DELAY_SECONDS="10",
                   # find a task whose worker died within a minute (Airflow's default: 5 minutes)
                   AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD="45",
                   AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL="5")
        home = tmp_path / "airflow_home"
        try:
            with AirflowProcess(home, env) as airflow:
                assert "CeleryExecutor with 2 workers" in airflow.log.read_text()
                run_id = airflow.start_run()
                killed = {}

                def kill_the_worker_running(states):
                    state, _, hostname = states.get(KILL_DURING, (None, 0, ""))
                    if killed or state != "running" or not hostname.startswith("worker"):
                        return
                    time.sleep(5)  # the task is under way
                    n = int(hostname[len("worker"):].split("@")[0])
                    assert _kill_worker(n) >= 3  # the worker, its pool process, the task's processes
                    killed["worker"] = hostname

                states = airflow.wait(run_id, timeout=2400, on_poll=kill_the_worker_running)
        finally:
            redis.stop()
    assert killed, f"{KILL_DURING} was never seen running on a worker"
    assert set(states) == set(F.COMPONENT_IDS)
    assert all(state == "success" for state, _, _ in states.values()), states
    assert states[KILL_DURING][1] >= 2  # the killed attempt, then the retry
    assert states[KILL_DURING][2].startswith("worker") and states[KILL_DURING][2] != killed["worker"], \
        "the retry ran on the other worker"
    assert {hostname.split("@")[0] for _, _, hostname in states.values()} == {"worker1", "worker2"}, \
        "both workers took tasks"
    pushed = [p for p in (tmp_path / "serving" / F.MODEL_NAME).iterdir() if p.name.isdigit()]
    assert len(pushed) == 1 and (pushed[0] / "saved_model.pb").exists()


def test_make_airflow_defaults_to_sqlite_and_the_sequential_executor(tmp_path):
    """`make airflow` as the README gives it, with no database or executor set: it compiles the plan, starts, and
    the scheduler lists the DAG with one task per node; a celery executor without PostgreSQL is refused."""
    data = generate(tmp_path / "data")
    env = dict(FRAUD_DATA_DIR=str(data), FRAUD_PIPELINE_ROOT=str(tmp_path / "root"),
               FRAUD_SERVING_DIR=str(tmp_path / "serving"))
    with AirflowProcess(tmp_path / "airflow_home", env) as airflow:
        banner = airflow.log.read_text()
        assert "SQLite" in banner and "SequentialExecutor" in banner and "Workers:" not in banner
        tasks = airflow._request("GET", f"/dags/{F.PIPELINE_NAME}/tasks")["tasks"]
        assert sorted(t["task_id"] for t in tasks) == sorted(F.COMPONENT_IDS)
    refused = subprocess.run(["bash", str(REPO / "scripts" / "airflow_standalone.sh")], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **env, "FRAUD_AIRFLOW_EXECUTOR": "celery",
                                                          "FRAUD_AIRFLOW_HOME": str(tmp_path / "other")})
    assert refused.returncode == 2 and "needs a PostgreSQL metadata database" in refused.stderr
