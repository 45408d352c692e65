"""The Airflow DAG (pipeline/airflow_dag.py), tested with Airflow itself.

- structure: Airflow's DagBag loads the DAG file in a fresh process and fresh AIRFLOW_HOME, like the
  scheduler does (bench/dag_import_time.py); no import errors, one task per TFX component, the edges,
  the schedule, the retries, and the parse time against the timeout `make airflow` sets;
- settings: the typed settings, the per-run parameters and their errors, without Airflow;
- a task's node (pipeline/airflow_launch.py, TFX's own launcher): a failed attempt retried, a completed node
  not run twice, on real components and a real ML Metadata store;
- slow: `airflow dags test` (real Airflow, fresh AIRFLOW_HOME and SQLite DB) on small generated data:
  a blessed model is pushed, a worse one is not, and data that fails validation stops the run at the
  DataValidationGate task with the anomaly in that task's log.

The DAG file does not import TFX (pipeline/airflow_plan.py): a parse takes about 1-1.5 s on the 2-core machine
(bench/dag_import_time.py); each task imports TFX when it runs its node.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fraud import features as F
from fraud.features import COMPONENT_IDS
from tests.helpers import REPO, SMALL_TRAIN_STEPS, generate

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAG_ID = F.PIPELINE_NAME
DAG_FILE = REPO / "pipeline" / "airflow_dag.py"
DAGS_TEST_TIMEOUT = 900


# ---------------------------------------------------------------------------------------------------------
# Structure and import time (one DagBag load in a fresh process)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dag_report():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "dag_import_time.py"), "--runs", "1", "--json"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dag_file_imports_without_errors(dag_report):
    assert dag_report["import_errors"] == {}
    assert list(dag_report["report"]["dags"]) == [DAG_ID]


@pytest.mark.parametrize("layout", ["copy", "folder"])
def test_dag_imports_from_a_copy_or_with_the_pipeline_folder_as_dags_folder(layout):
    """The three ways to deploy the DAG: a link to the file (the fixture above, as `make airflow` does), a copy
    of it, or Airflow's dags_folder set to the repository's pipeline/ folder, where a module named like the
    `pipeline` package would shadow it."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "dag_import_time.py"), "--runs", "1", "--json",
                           "--layout", layout], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layout"] == layout
    assert report["import_errors"] == {}, report["import_errors"]
    assert set(report["report"]["dags"][DAG_ID]["tasks"]) == set(COMPONENT_IDS)
    if layout == "folder":  # pipeline/.airflowignore: the DAG processor parses the DAG file only
        assert [Path(f).name for f in report["parsed_files"]] == [DAG_FILE.name]


def test_one_task_per_tfx_component_with_the_pipeline_edges(dag_report):
    tasks = dag_report["report"]["dags"][DAG_ID]["tasks"]
    assert set(tasks) == set(COMPONENT_IDS)
    upstream = {task_id: set(t["upstream"]) for task_id, t in tasks.items()}

    def ancestors(task_id):
        found, todo = set(), list(upstream[task_id])
        while todo:
            if (t := todo.pop()) not in found:
                found.add(t)
                todo += upstream[t]
        return found

    assert upstream["FraudExampleGen"] == set()
    assert {"StatisticsGen", "ExampleValidator", "ImportSchemaGen"} <= upstream["DataValidationGate"]
    assert "DataValidationGate" in upstream["Transform"]  # Transform only runs on validated data
    assert "Transform" in upstream["Trainer"]
    assert {"Trainer", "latest_blessed_model_resolver"} <= ancestors("Evaluator")
    assert "Evaluator" in upstream["ReferenceGate"]  # the gate takes the Evaluator's blessing on
    assert "ReferenceGate" in upstream["Pusher"]  # the Pusher waits for the gate's blessing
    assert {"FraudExampleGen", "DataValidationGate", "Trainer", "Evaluator"} <= ancestors("Pusher")


def test_daily_schedule_without_catchup_and_retries_with_backoff(dag_report):
    dag = dag_report["report"]["dags"][DAG_ID]
    assert dag["schedule"] == "@daily" and dag["timezone"] == "America/Lima"
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["dagrun_timeout_s"] and dag["dagrun_timeout_s"] > 0
    assert set(dag["params"]) == {"data_dir", "eval_days", "valid_days", "train_steps"}
    for task_id, task in dag["tasks"].items():
        assert task["retries"] >= 1, task_id
        assert task["retry_exponential_backoff"] is True, task_id
        assert task["retry_delay_s"] >= 60 and task["max_retry_delay_s"] >= task["retry_delay_s"], task_id
        assert task["execution_timeout_s"] and task["execution_timeout_s"] > 0, task_id


def test_parsing_the_dag_does_not_import_tfx(dag_report):
    """The scheduler parses the DAG file every few minutes and every task parses it again: it reads the compiled
    plan instead of building the pipeline (bench/dag_import_time.py prints the seconds)."""
    print(f"\nDAG file parse time: {dag_report['dag_file_parse_s'][0]:.1f} s (plan compiled once in "
          f"{dag_report['plan_compile_s']:.0f} s; 1-min load average {dag_report['load_average_1min']})")
    assert dag_report["heavy_modules_imported"] == []
    assert dag_report["report"]["heavy_modules_imported"] == []
    assert dag_report["configured_timeout_s"] >= 30


# ---------------------------------------------------------------------------------------------------------
# Settings and per-run parameters (no Airflow needed)
# ---------------------------------------------------------------------------------------------------------
def _env(tmp_path, **extra):
    return {"FRAUD_DATA_DIR": str(tmp_path / "data"), "FRAUD_PIPELINE_ROOT": str(tmp_path / "root"),
            "FRAUD_SERVING_DIR": str(tmp_path / "serving"), **extra}


def test_the_env_file_is_private_before_anything_is_written_to_it(tmp_path):
    """scripts/airflow_standalone.sh writes the Airflow environment (it may hold the metadata database's
    password) to $AIRFLOW_HOME/env.sh: its block, run on its own, creates the file mode 600 before writing."""
    import re
    import stat
    import subprocess

    script = (REPO / "scripts" / "airflow_standalone.sh").read_text()
    block = re.search(r'\nENV_FILE="\$AIRFLOW_HOME/env.sh"\n(.*?\} > "\$ENV_FILE"\n)', script, re.S).group(1)
    first_write = block.index('} > "$ENV_FILE"')  # the content; the line before creates it empty
    assert block.index("umask 077") < first_write and block.index('chmod 600 "$ENV_FILE"') < first_write
    home = tmp_path / "airflow_home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), "BIN": "/nowhere",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:s3cret@db/airflow"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", 'ENV_FILE="$AIRFLOW_HOME/env.sh"\n' + block], env=env,
                   check=True, timeout=30)
    written = home / "env.sh"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='postgresql://airflow:s3cret@db/airflow'" in written.read_text()


def test_settings_from_env_and_file(tmp_path):
    from pipeline.airflow_settings import load_settings

    settings = load_settings(_env(tmp_path, FRAUD_TRAIN_STEPS="250", FRAUD_DAG_RETRIES="4",
                                  FRAUD_BEAM_ARGS="--runner=DirectRunner --direct_running_mode=in_memory",
                                  FRAUD_SOMETHING_ELSE="ignored: another tool's variable"))
    assert settings.pipeline.train_steps == 250 and settings.dag.retries == 4
    assert settings.pipeline.data_dir == str(tmp_path / "data")  # need not exist when the DAG is parsed
    assert settings.pipeline.beam_args == ("--runner=DirectRunner", "--direct_running_mode=in_memory")

    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "fraud.yaml"
    file.write_text("pipeline:\n  data_dir: ../data\n  pipeline_root: /srv/root\n  serving_dir: /srv/models\n"
                    "  eval_days: 5\ndag:\n  schedule: '0 3 * * *'\n")
    settings = load_settings({"FRAUD_SETTINGS_FILE": str(file), "FRAUD_EVAL_DAYS": "6"})
    assert settings.pipeline.data_dir == str(tmp_path / "data")  # relative to the file's folder
    assert settings.pipeline.eval_days == 6  # the environment wins over the file
    assert settings.dag.schedule == "0 3 * * *"


@pytest.mark.parametrize("env, message", [
    ({}, "FRAUD_DATA_DIR, FRAUD_PIPELINE_ROOT, FRAUD_SERVING_DIR"),
    ({"FRAUD_TRAIN_STEPS": "many"}, "FRAUD_TRAIN_STEPS: Input should be a valid integer"),
    ({"FRAUD_EVAL_DAYS": "0"}, "FRAUD_EVAL_DAYS: Input should be greater than or equal to 1"),
    ({"FRAUD_DAG_RETRYS": "3"}, "FRAUD_DAG_RETRYS is not a DAG setting"),
    ({"FRAUD_DATA_DIR": "data/transactions"}, "must be an absolute path"),
    ({"FRAUD_DATA_DIR": "postgresql://fraud:s3cret@db:5432/x"}, "postgresql://fraud:***@db:5432/x carries a password"),
])
def test_settings_errors_name_the_variable(tmp_path, env, message):
    from pipeline.airflow_settings import SettingsError, load_settings

    full = _env(tmp_path) if env else {}  # the first case: nothing set at all
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("*", r"\*")) as info:
        load_settings({**full, **env})
    assert "s3cret" not in str(info.value)


def test_settings_file_errors(tmp_path):
    from pipeline.airflow_settings import SettingsError, load_settings

    file = tmp_path / "fraud.yaml"
    file.write_text("pipeline:\n  data_dir: /d\n  pipeline_root: /r\n  serving_dir: /s\n  train_step: 10\n")
    with pytest.raises(SettingsError, match=r"pipeline\.train_step in .*fraud\.yaml: Extra inputs"):
        load_settings({"FRAUD_SETTINGS_FILE": str(file)})
    with pytest.raises(SettingsError, match="cannot read it"):
        load_settings({"FRAUD_SETTINGS_FILE": str(tmp_path / "missing.yaml")})


def test_run_parameters_are_validated_like_the_cli(tmp_path):
    from pipeline.airflow_settings import SettingsError, load_settings, run_settings

    data = tmp_path / "data"
    data.mkdir()
    settings = load_settings(_env(tmp_path))
    assert settings.run_params() == {"data_dir": str(data), "eval_days": 7, "valid_days": 7, "train_steps": 1000}
    run = run_settings(settings, {"train_steps": 120, "eval_days": 5})
    assert run.train_steps == 120 and run.eval_days == 5 and run.pipeline_root == settings.pipeline.pipeline_root
    with pytest.raises(SettingsError, match="unknown key.*'pipeline_root'"):
        run_settings(settings, {"pipeline_root": "/elsewhere"})  # bound when the DAG is built
    with pytest.raises(SettingsError, match=r"dag_run.conf\['train_steps'\]: Input should be greater than"):
        run_settings(settings, {"train_steps": 0})
    with pytest.raises(SettingsError, match="does not exist"):
        run_settings(settings, {"data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(SettingsError, match="carries a password.*PGPASSWORD") as info:
        run_settings(settings, {"data_dir": "postgresql://fraud:s3cret@db/x"})  # nor from a run's conf
    assert "s3cret" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# A task's node, run by TFX's launcher: retries and runs already done (real ML Metadata, real components)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_retried_task_runs_its_node_again_and_a_completed_node_is_not_run_twice(tmp_path, monkeypatch):
    """What an Airflow task does (pipeline.airflow_launch.launch_node), in this process: the first attempt of
    FraudExampleGen fails half-way (an injected OSError while writing a split); the retry runs the node again and
    completes it; a third attempt in the same DAG run does nothing; the next node reads the completed execution's
    examples."""
    if "airflow" not in sys.modules:  # importing Airflow writes its config into AIRFLOW_HOME: not ~/airflow
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    from components import ingestion
    from pipeline.airflow_launch import launch_node
    from pipeline.airflow_settings import load_settings, run_settings

    generate(tmp_path / "data")
    run = run_settings(load_settings(_env(tmp_path)), {})
    run.pipeline_root.mkdir(parents=True)
    real, calls = ingestion.write_split, []

    def flaky(frame, split_dir):
        calls.append(split_dir)
        if len(calls) == 2:  # after one split was written
            raise OSError("no space left on device (injected)")
        return real(frame, split_dir)

    monkeypatch.setattr(ingestion, "write_split", flaky)
    with pytest.raises(Exception) as info:
        launch_node(run, "FraudExampleGen", "scheduled__2026-07-15")
    assert "injected" in repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert launch_node(run, "FraudExampleGen", "scheduled__2026-07-15") is True  # the retry
    assert launch_node(run, "FraudExampleGen", "scheduled__2026-07-15") is False  # done: not again
    assert launch_node(run, "BehaviouralFeatures", "scheduled__2026-07-15") is True
    states = node_executions(run.metadata_path, "FraudExampleGen")
    # the retry resumed the failed attempt's execution or started a new one; either way it completed once
    assert [state for _, state in states][-1] == "COMPLETE"
    assert [state for _, state in states].count("COMPLETE") == 1, states
    # BehaviouralFeatures read the examples of the completed execution
    [(inputs,)] = mlmd_rows(
        run.metadata_path,
        "SELECT a.uri FROM Event e JOIN Artifact a ON a.id = e.artifact_id JOIN Association s "
        "ON s.execution_id = e.execution_id JOIN Context c ON c.id = s.context_id "
        "WHERE c.name = ? AND e.type = 3", f"{F.PIPELINE_NAME}.BehaviouralFeatures")  # 3: INPUT
    assert inputs.endswith(f"/{states[-1][0]}")


# ---------------------------------------------------------------------------------------------------------
# Real Airflow runs (slow)
# ---------------------------------------------------------------------------------------------------------
class AirflowHome:
    """A fresh AIRFLOW_HOME (SQLite DB, dags folder linking the DAG file) and runs of `airflow dags test`."""

    def __init__(self, base: Path):
        self.home = base / "airflow_home"
        dags = self.home / "dags"
        dags.mkdir(parents=True)
        (dags / "fraud_detection_dag.py").symlink_to(DAG_FILE)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRAUD_"))}
        self.env.update(
            AIRFLOW_HOME=str(self.home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home}/airflow.db",
            AIRFLOW__CORE__EXECUTOR="SequentialExecutor",
            # the same parse timeouts as `make airflow` (the DAG imports TFX; a loaded CI machine is slow)
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="300", AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT="360",
            FRAUD_DAG_RETRY_DELAY_SECONDS="5", FRAUD_DAG_MAX_RETRY_DELAY_SECONDS="10",
        )
        proc = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True,
                              timeout=600, cwd=base)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def dags_test(self, date: str, conf: dict | None, **fraud_env) -> subprocess.CompletedProcess:
        env = {**self.env, **fraud_env}
        args = [AIRFLOW, "dags", "test", DAG_ID, date] + (["--conf", json.dumps(conf)] if conf else [])
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=DAGS_TEST_TIMEOUT,
                              cwd=self.home)

    def task_states(self, date: str) -> dict[str, tuple[str, int]]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute("SELECT ti.task_id, ti.state, ti.try_number FROM task_instance ti "
                              "JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                              "WHERE ti.dag_id = ? AND dr.execution_date LIKE ?", (DAG_ID, f"{date}%")).fetchall()
        return {task_id: (state, tries) for task_id, state, tries in rows}


def task_log(output: str, task_id: str) -> str:
    """`dags test` runs the tasks in its own process and writes each task's log to stdout between these marks."""
    start = output.index(f"[DAG TEST] starting task_id={task_id} ")
    end = output.find(f"[DAG TEST] end task task_id={task_id} ", start)
    return output[start:end if end >= 0 else None]


def mlmd_rows(metadata_path: Path, sql: str, *args):
    with sqlite3.connect(metadata_path) as db:
        return db.execute(sql, args).fetchall()


def node_executions(metadata_path: Path, node_id: str) -> list[tuple[int, str]]:
    """(execution id, state) of a node's executions, oldest first (TFX's launcher: one per attempt)."""
    names = {1: "NEW", 2: "RUNNING", 3: "COMPLETE", 4: "FAILED", 5: "CACHED", 6: "CANCELED"}
    return [(execution_id, names.get(state, str(state))) for execution_id, state in mlmd_rows(
        metadata_path,
        "SELECT e.id, e.last_known_state FROM Execution e JOIN Association a ON a.execution_id = e.id "
        "JOIN Context c ON c.id = a.context_id WHERE c.name = ? ORDER BY e.id", f"{F.PIPELINE_NAME}.{node_id}")]


def execution_property(metadata_path: Path, node_id: str, name: str) -> list[str]:
    """A property (execution parameter) of a node's executions, one per execution."""
    return [value for (value,) in mlmd_rows(
        metadata_path,
        "SELECT p.string_value FROM ExecutionProperty p JOIN Association a ON a.execution_id = p.execution_id "
        "JOIN Context c ON c.id = a.context_id WHERE c.name = ? AND p.name = ? ORDER BY p.execution_id",
        f"{F.PIPELINE_NAME}.{node_id}", name)]


def versions(serving_dir: Path) -> list[Path]:
    base = serving_dir / F.MODEL_NAME
    return sorted(p for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return AirflowHome(tmp_path_factory.mktemp("airflow"))


@pytest.fixture(scope="module")
def blessed_run(airflow_home, tmp_path_factory):
    """One `airflow dags test` on small data: the run's conf sets train_steps (the env says something else)."""
    base = tmp_path_factory.mktemp("dag_run")
    data = generate(base / "data")
    env = dict(FRAUD_DATA_DIR=str(data), FRAUD_PIPELINE_ROOT=str(base / "root"),
               FRAUD_SERVING_DIR=str(base / "serving"), FRAUD_TRAIN_STEPS="60")
    proc = airflow_home.dags_test("2026-07-15", {"train_steps": SMALL_TRAIN_STEPS}, **env)
    return base, env, proc


@pytest.mark.slow
def test_dags_test_runs_every_task_and_pushes_a_blessed_model(airflow_home, blessed_run):
    base, _, proc = blessed_run
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    states = airflow_home.task_states("2026-07-15")
    assert set(states) == set(COMPONENT_IDS)
    assert all(state == "success" for state, _ in states.values()), states
    metadata_path = base / "root" / F.METADATA_FILE
    uris = [Path(uri) for (uri,) in mlmd_rows(metadata_path, "SELECT uri FROM Artifact")]
    assert uris and all(uri.exists() for uri in uris)  # every TFX artifact recorded in ML Metadata exists
    produced = {uri.relative_to(base / "root" / "artifacts").parts[0] for uri in uris}
    assert produced >= set(COMPONENT_IDS) - {"latest_blessed_model_resolver"}
    # the run's conf reached the Trainer (the environment said 60 steps)
    [train_args] = execution_property(metadata_path, "Trainer", "train_args")
    assert json.loads(train_args)["num_steps"] == SMALL_TRAIN_STEPS
    pushed = versions(base / "serving")
    assert len(pushed) == 1 and (pushed[0] / "saved_model.pb").exists()


@pytest.mark.slow
def test_a_worse_model_is_not_pushed(airflow_home, blessed_run):
    """Second run on the same pipeline root: one training step makes a model worse than the blessed
    baseline; the Evaluator does not bless it and the Pusher, gated by model_blessing, pushes nothing."""
    base, env, first = blessed_run
    assert first.returncode == 0, "needs the blessed run"
    before = versions(base / "serving")
    # The Trainer's floor at 0: the one-step model must reach the Evaluator for the regression gate to refuse it.
    proc = airflow_home.dags_test("2026-07-16", {"train_steps": 1}, **{**env, "FRAUD_MIN_VALID_ROC_AUC": "0"})
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    states = airflow_home.task_states("2026-07-16")
    assert all(state == "success" for state, _ in states.values()), states
    metadata_path = base / "root" / F.METADATA_FILE
    blessed = mlmd_rows(metadata_path, "SELECT p.int_value FROM ArtifactProperty p JOIN Artifact a ON a.id = p.artifact_id "
                        "JOIN Type t ON t.id = a.type_id WHERE t.name = 'ModelBlessing' AND p.name = 'blessed' "
                        "ORDER BY a.id")
    assert [b for (b,) in blessed] == [1, 1, 0, 0]  # run 1: Evaluator, ReferenceGate; run 2: the same
    assert versions(base / "serving") == before


@pytest.mark.slow
def test_data_failing_validation_stops_the_run_at_the_gate(airflow_home, tmp_path):
    data = generate(tmp_path / "bad")
    last = sorted(data.glob("*.csv"))[-1]
    frame = pd.read_csv(last, dtype=str, keep_default_na=False)
    frame.loc[frame.index[::3], F.PAYMENT_METHOD] = "bitcoin"  # a third of a month: outside the schema's domain
    frame.to_csv(last, index=False)
    env = dict(FRAUD_DATA_DIR=str(tmp_path / "not-yet"),  # the run's conf points at the bad data
               FRAUD_PIPELINE_ROOT=str(tmp_path / "root"), FRAUD_SERVING_DIR=str(tmp_path / "serving"),
               FRAUD_TRAIN_STEPS=str(SMALL_TRAIN_STEPS))
    proc = airflow_home.dags_test("2026-07-20", {"data_dir": str(data)}, **env)
    assert proc.returncode != 0 and "DagRun failed" in proc.stdout + proc.stderr
    states = airflow_home.task_states("2026-07-20")
    assert states["DataValidationGate"] == ("failed", 1)  # failed at once: a data error is not retried
    for task_id in ("Transform", "Trainer", "Evaluator", "Pusher"):
        assert states[task_id][0] == "upstream_failed", (task_id, states)
    log = task_log(proc.stdout, "DataValidationGate")
    assert "DataValidationError" in log and "'payment_method'" in log and "bitcoin" in log
    assert "not retried" in log
    assert versions(tmp_path / "serving") == []
