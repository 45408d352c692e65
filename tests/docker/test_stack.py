"""The platform's containers (docker-compose.yml + docker-compose.local.yml, started by docker/stack.sh as `make
stack` does): the production compose file is valid and pinned; the stack comes up healthy; the model server serves
a model trained by the image; the decision service answers; Prometheus scrapes every target; Alertmanager's alerts
reach the webhook receiver.

The stack under test is its own compose project (fraudtest, its own volumes, free ports on 127.0.0.1), removed with
its volumes at the end, so it never touches a `make stack` running on the same machine.
"""
from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.docker.conftest import docker, run

pytestmark = pytest.mark.slow

PROJECT = "fraudtest"
MODEL = "fraud_detector"
PORTS = ("AIRFLOW_PORT", "GRPC_PORT", "REST_PORT", "DECISION_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")
# Jobs of docker/prometheus/prometheus.yml: every one must be up.
JOBS = {"prometheus", "alertmanager", "tf-serving", "model-status", "decision-service"}
# Services without a health check: one-offs that must have exited 0.
ONE_OFFS = {"init-volumes", "airflow-init"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
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


# ADD (DAG on Celery): trigger the DAG through the webserver's REST API (basic auth: AIRFLOW_ADMIN_USER and
# AIRFLOW_ADMIN_PASSWORD of stack["env"]["ENV_FILE"], port stack["ports"]["AIRFLOW_PORT"]), with the small data set
# generated into the shared volume (docker exec fraudtest_airflow-worker-1_1 fraudctl generate --out /srv/fraud/data
# ...); every task succeeds; task instances' hostname shows both airflow-worker-1 and airflow-worker-2; the pushed
# version is then served (the `served` fixture's probe) and decided with.
