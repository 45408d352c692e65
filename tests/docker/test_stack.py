"""The platform's containers (docker-compose.yml + docker-compose.local.yml, started by docker/stack.sh as `make
stack` does): the production compose file is valid and pinned; the stack comes up healthy; the model server serves
a model trained by the image; the decision service answers; Prometheus scrapes every target; Alertmanager's alerts
reach the webhook receiver; the DAG runs on the two Celery workers and the model it pushes is served.

The stack under test is its own compose project (fraudtest, its own volumes, free ports on 127.0.0.1), removed with
its volumes at the end, so it never touches a `make stack` running on the same machine.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from fraud import features as F
from tests.docker.conftest import docker, run
from tests.helpers import SMALL_TRAIN_STEPS

pytestmark = pytest.mark.slow

PROJECT = "fraudtest"
MODEL = "fraud_detector"
PORTS = ("AIRFLOW_PORT", "GRPC_PORT", "REST_PORT", "DECISION_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")
# Jobs of docker/prometheus/prometheus.yml: every one must be up.
JOBS = {"prometheus", "alertmanager", "tf-serving", "model-status", "decision-service"}
# Services without a health check: one-offs that must have exited 0.
ONE_OFFS = {"init-volumes", "airflow-init"}
DAG_ID = "fraud_detection"
WORKERS = {"airflow-worker-1", "airflow-worker-2"}
AIRFLOW_SERVICES = ("airflow-init", "airflow-webserver", "airflow-scheduler", *sorted(WORKERS))
# The DAG's settings in the stack under test (a compose file of the test's own, docker/stack.sh's
# STACK_EXTRA_FILES; the production files keep their defaults): the small training of tests/helpers.py, and a
# failed task retried once, after seconds instead of minutes.
TEST_PIPELINE_ENV = {"FRAUD_TRAIN_STEPS": str(SMALL_TRAIN_STEPS), "FRAUD_DAG_RETRIES": "1",
                     "FRAUD_DAG_RETRY_DELAY_SECONDS": "5", "FRAUD_DAG_MAX_RETRY_DELAY_SECONDS": "10"}
DAG_RUN_TIMEOUT_S = 1200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, timeout: float = 10.0, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for(what: str, probe, timeout: float, interval: float = 3.0):
    """probe() until it returns something truthy; its last value or exception is in the failure."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})"[:3000])


def env_file(path: Path) -> Path:
    """An env file as `make stack` writes it (docker/stack.sh env: generated secrets from .env.example)."""
    run(["bash", "docker/stack.sh", "env"], env={**os.environ, "ENV_FILE": str(path)})
    return path


def compose_config(files, env: Path) -> dict:
    args = ["docker-compose", "-p", PROJECT, "--env-file", env]
    for f in files:
        args += ["-f", f]
    return yaml.safe_load(run([*args, "config"]).stdout)


def test_production_compose_file_is_valid_pinned_and_local_only(docker_engine, tmp_path):
    config = compose_config(["docker-compose.yml"], env_file(tmp_path / ".env"))
    services = config["services"]
    assert {"postgres", "redis", "airflow-webserver", "airflow-scheduler", "airflow-worker-1", "airflow-worker-2",
            "model-server", "decision-service", "prometheus", "alertmanager"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest", f"{name}: image {image} is not pinned"
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: port {port} is published beyond this host"
        if name in ONE_OFFS:
            assert service.get("restart") == "no"
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no health check"
            assert not service["healthcheck"].get("disable")
    assert services["model-server"]["image"] == "tensorflow/serving:2.16.1"
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # The local override changes the model server only.
    local = compose_config(["docker-compose.yml", "docker-compose.local.yml"], tmp_path / ".env")["services"]
    assert local["model-server"]["image"] == services["decision-service"]["image"]

    def others(config):  # volume order is not meaningful (docker-compose config reorders merged lists)
        return {name: {**svc, "volumes": sorted(map(str, svc.get("volumes", [])))}
                for name, svc in config.items() if name != "model-server"}
    assert others(local) == others(services)


@pytest.fixture(scope="module")
def stack(project_image, trained_model_volume, tmp_path_factory):
    """The stack up and healthy (docker/stack.sh up), torn down with its volumes afterwards. The model is trained
    first (when not cached), so that the pipeline does not share the two cores with a starting stack."""
    if docker("run", "--rm", "--entrypoint", "python", project_image, "-c", "import airflow.providers.celery",
              check=False).returncode != 0:
        pytest.fail(f"{project_image} has no apache-airflow-providers-celery: the CeleryExecutor needs it in "
                    "requirements/lock.txt (docs/containers.md)")
    env = {**os.environ, "ENV_FILE": str(env_file(tmp_path_factory.mktemp("stack") / ".env")),
           "COMPOSE_PROJECT_NAME": PROJECT, "FRAUD_IMAGE": project_image, "SKIP_IMAGE_BUILD": "1",
           "STACK_LOCAL": "1", "STACK_WAIT_SECONDS": "600"}
    ports = {name: free_port() for name in PORTS}
    env.update({name: str(port) for name, port in ports.items()})
    override = Path(env["ENV_FILE"]).parent / "docker-compose.test.yml"
    override.write_text(yaml.safe_dump({"services": {
        name: {"environment": TEST_PIPELINE_ENV} for name in AIRFLOW_SERVICES}}))
    env["STACK_EXTRA_FILES"] = str(override)

    def down():
        run(["bash", "docker/stack.sh", "down"], env={**env, "STACK_DOWN_ARGS": "-v"}, timeout=300, check=False)

    down()  # a previous run killed before its teardown
    started = time.monotonic()
    up = run(["bash", "docker/stack.sh", "up"], env=env, timeout=1200, check=False)
    if up.returncode != 0:
        logs = run(["bash", "docker/stack.sh", "compose", "logs", "--tail", "30"], env=env, check=False).stdout
        down()
        raise AssertionError(f"the stack did not become healthy:\n{up.stderr[-4000:]}\n{logs[-8000:]}")
    print(f"stack healthy in {time.monotonic() - started:.0f} s")
    yield {"env": env, "ports": ports, "url": lambda name: f"http://127.0.0.1:{ports[name]}"}
    down()


@pytest.fixture(scope="module")
def served(stack, trained_model_volume, project_image):
    """The image-trained model copied into the stack's shared volume, as the Pusher would put it, and AVAILABLE."""
    docker("run", "--rm", "--entrypoint", "cp", "-v", f"{trained_model_volume}:/from:ro",
           "-v", f"{PROJECT}_fraud-data:/srv/fraud", project_image,
           "-a", f"/from/serving_models/{MODEL}/.", f"/srv/fraud/serving_models/{MODEL}/")
    url = f"{stack['url']('REST_PORT')}/v1/models/{MODEL}"

    def available():
        status, body = http("GET", url)
        states = [v["state"] for v in body.get("model_version_status", [])] if status == 200 else []
        return body if "AVAILABLE" in states else None

    body = wait_for("the model server loads the copied model", available, timeout=180)
    return int(body["model_version_status"][0]["version"])


def test_every_service_is_healthy(stack):
    lines = run(["bash", "docker/stack.sh", "status"], env=stack["env"]).stdout.split("\n")
    states = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    assert set(states) >= {"postgres", "redis", "airflow-webserver", "airflow-scheduler", "airflow-worker-1",
                           "airflow-worker-2", "model-server", "decision-service", "prometheus", "alertmanager"}
    for name, (state, health, code) in states.items():
        if name in ONE_OFFS:
            assert (state, code) == ("exited", "0"), f"{name}: {state} (exit {code})"
        else:
            assert (state, health) == ("running", "healthy"), f"{name}: {state}/{health}"


def test_the_model_server_serves_the_pushed_model(stack, served):
    status, body = http("GET", f"{stack['url']('REST_PORT')}/v1/models/{MODEL}/metadata")
    assert status == 200, body
    assert int(body["model_spec"]["version"]) == served


def test_the_decision_service_decides_with_the_model(stack, served):
    transaction = {"transaction_id": "T-DOCKER-1", "timestamp": "2026-03-14T21:05:00-05:00", "amount": "845.00",
                   "currency": "PEN", "user_id": "U-77", "restaurant_id": "R-12", "city": "Lima", "device_id": "D-5"}
    url = f"{stack['url']('DECISION_PORT')}/v1/decisions"

    def decided():  # the service finds the new version on its first calls after the load
        status, body = http("POST", url, {**transaction, "transaction_id": f"T-DOCKER-{time.monotonic_ns()}"})
        assert status == 200, body
        return body if not body["degraded"] else None

    body = wait_for("a decision with the model (not degraded)", decided, timeout=60)
    assert body["decision"] in ("approve", "review", "decline")
    assert body["model_version"] == served and 0.0 <= body["score"] <= 1.0


def test_no_secret_in_the_decision_service_health_answer(stack):
    status, body = http("GET", f"{stack['url']('DECISION_PORT')}/healthz")
    assert status == 200
    password = next(line.split("=", 1)[1] for line in Path(stack["env"]["ENV_FILE"]).read_text().splitlines()
                    if line.startswith("REDIS_PASSWORD="))
    assert password not in json.dumps(body)


def test_prometheus_scrapes_every_target(stack, served):
    url = f"{stack['url']('PROMETHEUS_PORT')}/api/v1/targets"

    def all_up():
        targets = http("GET", url)[1]["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if set(health) == JOBS and set(health.values()) == {"up"} else None

    wait_for("every Prometheus target up", all_up, timeout=90)
    status, body = http("GET", f"{stack['url']('PROMETHEUS_PORT')}/api/v1/rules")
    assert status == 200 and len(body["data"]["groups"]) >= 3  # serving/alert_rules.yml loaded
    status, body = http("GET", f"{stack['url']('PROMETHEUS_PORT')}/api/v1/alertmanagers")
    assert [a["url"] for a in body["data"]["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]


def test_an_alert_reaches_the_webhook_receiver(stack):
    """Alertmanager routes to docker/alert_webhook.py (Prometheus' own rules need minutes to fire: an alert is posted
    to Alertmanager's API the way Prometheus sends one)."""
    name = f"DockerStackTest{time.monotonic_ns()}"
    status, body = http("POST", f"{stack['url']('ALERTMANAGER_PORT')}/api/v2/alerts",
                        [{"labels": {"alertname": name, "severity": "warning"},
                          "annotations": {"summary": "tests/docker/test_stack.py"}}])
    assert status == 200, body

    def received():
        out = docker("exec", f"{PROJECT}_alert-webhook_1", "python", "-c",
                     "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9099/alerts').read()"
                     ".decode())").stdout
        return [a for a in json.loads(out) if a["labels"].get("alertname") == name]

    wait_for("the alert at the webhook receiver", received, timeout=60)


def env_values(path) -> dict:
    return dict(line.split("=", 1) for line in Path(path).read_text().splitlines()
                if "=" in line and not line.lstrip().startswith("#"))


def served_versions(stack) -> dict[int, str]:
    """{version: state} of the model server's REST status API."""
    status, body = http("GET", f"{stack['url']('REST_PORT')}/v1/models/{MODEL}")
    return {int(v["version"]): v["state"] for v in body.get("model_version_status", [])} if status == 200 else {}


def test_the_dag_runs_on_both_celery_workers_and_its_model_is_served(stack, served, trained_model_volume,
                                                                     project_image):
    """Unpaused through the webserver's REST API (created paused; catchup off: Airflow starts one scheduled run),
    the DAG runs on the CeleryExecutor: every task succeeds, both workers take tasks, and the version the Pusher
    writes to the shared volume is served and decided with."""
    values = env_values(stack["env"]["ENV_FILE"])
    auth = base64.b64encode(f"{values.get('AIRFLOW_ADMIN_USER') or 'admin'}:{values['AIRFLOW_ADMIN_PASSWORD']}"
                            .encode()).decode()
    api = f"{stack['url']('AIRFLOW_PORT')}/api/v1/dags/{DAG_ID}"

    def airflow(method, path="", body=None):
        status, answer = http(method, api + path, body, timeout=30, headers={"Authorization": f"Basic {auth}"})
        assert status == 200, f"{method} {api + path}: {status} {answer}"
        return answer

    # The data: the small data set (tests/helpers.py SMALL_DATA) the image-trained model came from, generated by
    # `fraudctl generate` in the image (trained_model_volume), copied to FRAUD_DATA_DIR on the stack's volume.
    docker("run", "--rm", "--entrypoint", "cp", "-v", f"{trained_model_volume}:/from:ro",
           "-v", f"{PROJECT}_fraud-data:/srv/fraud", project_image, "-a", "/from/data/.", "/srv/fraud/data/")
    wait_for("the scheduler has the DAG", lambda: http("GET", api, headers={"Authorization": f"Basic {auth}"})[0]
             == 200, timeout=300)
    started = time.monotonic()
    assert airflow("PATCH", "?update_mask=is_paused", {"is_paused": False})["is_paused"] is False
    def runs():
        return [r["dag_run_id"] for r in airflow("GET", "/dagRuns")["dag_runs"]]

    try:
        try:
            run_id = wait_for("a scheduled run after unpausing", runs, timeout=60, interval=2)[0]
        except AssertionError:  # seen once in three runs: no scheduled run; a run triggered by hand instead
            airflow("POST", "/dagRuns", {"conf": {}})
            run_id = wait_for("a run triggered by hand", runs, timeout=120, interval=2)[0]
    except AssertionError as exc:
        logs = docker("logs", "--tail", "60", f"{PROJECT}_airflow-scheduler_1", check=False)
        raise AssertionError(f"{exc}\nthe DAG: {airflow('GET')}\nscheduler:\n{(logs.stdout + logs.stderr)[-6000:]}")

    def finished():
        state = airflow("GET", f"/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    try:
        state = wait_for(f"DAG run {run_id} finished", finished, timeout=DAG_RUN_TIMEOUT_S, interval=5)
    finally:
        tasks = airflow("GET", f"/dagRuns/{run_id}/taskInstances")["task_instances"]
        summary = {t["task_id"]: (t["state"], t["try_number"], t.get("hostname"), round(t.get("duration") or 0))
                   for t in tasks}
        print(f"DAG run {run_id}: {time.monotonic() - started:.0f} s from unpausing; "
              f"task: (state, try, hostname, seconds) {summary}")
    assert state == "success", summary
    assert set(summary) == set(F.COMPONENT_IDS)
    assert all(s == "success" for s, _, _, _ in summary.values()), summary
    hosts = {(hostname or "").split(".")[0] for _, _, hostname, _ in summary.values()}
    assert hosts == WORKERS, f"both workers take tasks: {summary}"

    # The Pusher's new version on the shared volume (a timestamp: newer than the copied one), then served.
    listing = docker("exec", f"{PROJECT}_airflow-worker-1_1", "ls", f"/srv/fraud/serving_models/{MODEL}").stdout
    pushed = sorted(int(name) for name in listing.split() if name.isdigit() and int(name) > served)
    assert len(pushed) == 1, f"the run pushed one new version: {listing.split()} (copied: {served})"
    new = pushed[0]
    wait_for(f"the model server serves version {new}", lambda: served_versions(stack).get(new) == "AVAILABLE",
             timeout=180)
    url = f"{stack['url']('DECISION_PORT')}/v1/decisions"
    transaction = {"transaction_id": "T-DAG-1", "timestamp": "2026-03-14T21:05:00-05:00", "amount": "845.00",
                   "currency": "PEN", "user_id": "U-78", "restaurant_id": "R-12", "city": "Lima", "device_id": "D-6"}

    def decided_with_new():
        status, body = http("POST", url, {**transaction, "transaction_id": f"T-DAG-{time.monotonic_ns()}"})
        assert status == 200, body
        return body if body["model_version"] == new and not body["degraded"] else None

    wait_for(f"a decision with version {new}", decided_with_new, timeout=120)
