"""Drive `make airflow` (scripts/airflow_standalone.sh) from Python: start it, start a run through Airflow's REST
API, follow it. Used by tests/airflow/test_airflow_celery.py and bench/airflow_run_bench.py.

    with AirflowProcess(home, env) as airflow:        # env: FRAUD_* and FRAUD_AIRFLOW_* settings
        run_id = airflow.start_run()                     # unpaused: the scheduled run of the latest day
        states = airflow.wait(run_id, timeout=1800)    # {task_id: (state, try_number, hostname)}
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from local_servers import free_port  # scripts/ is on the path: these scripts run from it or insert it

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "airflow_standalone.sh"
DAG_ID = "fraud_detection"  # fraud.features.PIPELINE_NAME (this script runs without the project's imports)
FINISHED = ("success", "failed")




class AirflowProcess:
    """scripts/airflow_standalone.sh in its own process group, its output in <home>/make_airflow.log."""

    def __init__(self, home: Path, env: dict, *, start_timeout: float = 900):
        self.home = Path(home)
        self.port = free_port()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}, **env,
                    "FRAUD_AIRFLOW_HOME": str(self.home), "FRAUD_AIRFLOW_PORT": str(self.port)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.proc = None
        self.log = self.home / "make_airflow.log"

    def __enter__(self):
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "w")
        self.proc = subprocess.Popen(["bash", str(SCRIPT)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if "Airflow is running" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"make airflow exited ({self.proc.returncode}):\n{text[-4000:]}")
            time.sleep(2)
        raise RuntimeError(f"Airflow not ready after {self.start_timeout:.0f} s:\n{self.log.read_text()[-4000:]}")

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the script's trap stops Airflow and the workers
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return False

    # REST API ------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None):
        password = (self.home / "admin_password").read_text().strip()
        request = urllib.request.Request(self.url + "/api/v1" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{password}".encode()).decode())
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def start_run(self, timeout: float = 120) -> str:
        """Unpause the DAG (created paused): with catchup off, Airflow starts one scheduled run, for the latest
        interval, as it does in production. Its run id. (A run triggered by hand besides it would wait for it:
        max_active_runs=1.)"""
        self._request("PATCH", f"/dags/{DAG_ID}?update_mask=is_paused", {"is_paused": False})
        began = time.monotonic()
        triggered = False
        while time.monotonic() < began + timeout:
            runs = self._request("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
            if runs:
                return runs[0]["dag_run_id"]
            if not triggered and time.monotonic() > began + timeout / 2:  # no scheduled run (seen once): by hand
                self._request("POST", f"/dags/{DAG_ID}/dagRuns", {"conf": {}})
                triggered = True
            time.sleep(1)
        raise TimeoutError(f"no run of {DAG_ID} started within {timeout:.0f} s of unpausing it")

    def run_state(self, run_id: str) -> str:
        return self._request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def task_states(self, run_id: str) -> dict[str, tuple[str | None, int, str]]:
        """{task id: (state, try number, hostname: where the latest try ran)}."""
        items = self._request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: (t["state"], t["try_number"], t.get("hostname") or "") for t in items}

    def wait(self, run_id: str, timeout: float = 1800, *, on_poll=None) -> dict:
        """Poll until the run finishes; the final task states. `on_poll(states)` sees each poll's states."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = self.task_states(run_id)
                if on_poll is not None:
                    on_poll(states)
                if self.run_state(run_id) in FINISHED:
                    return self.task_states(run_id)
            except (urllib.error.URLError, OSError):
                pass  # the webserver restarting its workers
            time.sleep(3)
        raise TimeoutError(f"DAG run {run_id} not finished after {timeout:.0f} s")
