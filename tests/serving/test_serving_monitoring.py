"""Monitoring for real, and every serving config file checked by the tool that will read it.

Tests that need the server are marked slow; the config checks are fast.
- Debian's `prometheus`, started here, scrapes the local server; its HTTP API returns the request counter.
- `promtool check metrics` parses the exposition (its lint complaints may only be about TF Serving's own
  metric names, which we keep as upstream has them); `promtool check config` / `check rules` pass on
  serving/*.yml and `promtool test rules` checks what the alerts do.
- The TF Serving text protos (.config) parse with TF Serving's protos; docker-compose.yml wires them.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
from google.protobuf import text_format
import pytest
import requests
import yaml

from fraud import features as F
from serving.config import (BatchingParameters, ConfigError, parse_batching_parameters, parse_model_server_config,
                            parse_monitoring_config, prometheus_path)
from serving.metrics import ServingMetrics
from tests.serving.support import BATCHING_CONFIG, CANARY, MODELS_CONFIG, MONITORING_CONFIG, SERVING_DIR, STABLE, \
    serving_target
from tests.helpers import require_system_tool

PROMETHEUS_YML = SERVING_DIR / "prometheus.yml"
ALERT_RULES = SERVING_DIR / "alert_rules.yml"
COMPOSE = SERVING_DIR / "docker-compose.yml"
TIMEOUT = 10
REQUEST_COUNT = ":tensorflow:serving:request_count"
TF_NAME = re.compile(r"^:tensorflow:")


# --------------------------------------------------------------------------------------------------
# Config files (fast)
# --------------------------------------------------------------------------------------------------
def test_models_config_parses_with_tf_serving_protos():
    """As checked in it serves whatever the Pusher wrote (no version numbers that no run produces)."""
    config = parse_model_server_config(MODELS_CONFIG)
    (model,) = config.model_config_list.config
    assert model.name == F.MODEL_NAME
    assert model.base_path == f"/models/{F.MODEL_NAME}"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert not model.version_labels  # labels pin versions: `fraudctl serve-config` writes them from real pushes


def test_serve_config_pins_pushed_versions_by_label(tmp_path):
    from tests.helpers import run_fraudctl

    base = tmp_path / F.MODEL_NAME
    for version in (1780000000, 1780600000, 1781200000):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / F.SAVED_MODEL_FILE).write_bytes(b"")
    (base / "1790000000").mkdir()  # half-pushed (no saved_model.pb yet): not a version
    out = tmp_path / "models.config"
    proc = run_fraudctl("serve-config", "--model-base", base, "--base-path", f"/models/{F.MODEL_NAME}", "--out", out)
    assert proc.returncode == 0, proc.stderr
    (model,) = parse_model_server_config(out).model_config_list.config
    assert model.base_path == f"/models/{F.MODEL_NAME}"
    assert list(model.model_version_policy.specific.versions) == [1780600000, 1781200000]
    assert dict(model.version_labels) == {STABLE: 1780600000, CANARY: 1781200000}
    proc = run_fraudctl("serve-config", "--model-base", base, "--canary", "1780600000", "--stable", "1780000000")
    (model,) = text_format.Parse(proc.stdout, type(parse_model_server_config(out))()).model_config_list.config
    assert dict(model.version_labels) == {STABLE: 1780000000, CANARY: 1780600000}
    assert model.base_path == str(base.resolve())
    proc = run_fraudctl("serve-config", "--model-base", base, "--stable", "1790000000", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "1790000000 not pushed" in proc.stderr and "1781200000" in proc.stderr
    assert not (tmp_path / "x").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_fraudctl("serve-config", "--model-base", empty)
    assert proc.returncode == 2 and "run the pipeline" in proc.stderr


def test_monitoring_and_batching_configs_parse(tmp_path):
    monitoring = parse_monitoring_config(MONITORING_CONFIG)
    assert monitoring.prometheus_config.enable
    assert prometheus_path(monitoring) == "/monitoring/prometheus/metrics"
    batching = parse_batching_parameters(BATCHING_CONFIG)
    assert batching.num_batch_threads.value >= 1
    assert batching.allowed_batch_sizes[-1] == batching.max_batch_size.value
    assert 0 <= batching.batch_timeout_micros.value <= 10_000  # the guide: 0, then tune within 1-10 ms
    # The protos are strict: a misspelt field is an error, as in TF Serving.
    bad = tmp_path / "bad.config"
    bad.write_text("max_batch_size { value: 8 }\nbatch_timeout_micro { value: 0 }\n")
    with pytest.raises(ConfigError, match="batch_timeout_micro"):
        parse_batching_parameters(bad)
    assert BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"


def test_docker_compose_runs_tf_serving_216_with_these_files():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    serving = services["tf-serving"]
    assert serving["image"] == "tensorflow/serving:2.16.1"  # TensorFlow 2.16, as the training stack
    flags = dict(arg.lstrip("-").split("=", 1) for arg in serving["command"])
    mounts = {target: source for source, target, _mode in (v.rsplit(":", 2) for v in serving["volumes"])}
    for flag in ("model_config_file", "monitoring_config_file", "batching_parameters_file"):
        local = mounts[flags[flag]]
        assert (SERVING_DIR / local).is_file(), f"{flag} mounts {local}, which does not exist"
    assert flags["enable_batching"] == "true" and flags["enable_model_warmup"] == "true"
    base = parse_model_server_config(MODELS_CONFIG).model_config_list.config[0].base_path
    assert any(base.startswith(target.rstrip("/") + "/") for target in mounts), "models.config base_path unmounted"
    exporter = services["model-status-exporter"]["command"]
    assert exporter[exporter.index("--model") + 1] == F.MODEL_NAME
    for volume in services["model-status-exporter"]["volumes"]:
        assert (SERVING_DIR / volume.rsplit(":", 2)[0]).is_file()
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert any(v.startswith("./alert_rules.yml:") for v in prometheus["volumes"])
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    tf_job = next(job for job in scrape if job["job_name"] == "tf-serving")
    assert tf_job["metrics_path"] == prometheus_path(parse_monitoring_config(MONITORING_CONFIG))


def test_alert_rules_name_our_model_and_metrics():
    rules = [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"FraudModelUnavailable", "FraudServingHighErrorRatio", "FraudServingP99LatencyHigh",
            "FraudModelStale"} <= names
    metrics = ServingMetrics()
    known = {m.name for m in metrics.all}
    for rule in rules:
        for model in re.findall(r'model_name="([^"]+)"', rule["expr"]):
            assert model == F.MODEL_NAME
        for name in re.findall(r"(:tensorflow:[a-z_:]+|serving_model_[a-z_]+)", rule["expr"]):
            assert name in known or re.sub(r"_(bucket|sum|count)$", "", name) in known, \
                f"{rule['alert']}: unknown metric {name}"


# --------------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------------
def test_promtool_check_config_and_rules():
    promtool = require_system_tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alert_rules.yml" in result.stdout + result.stderr  # the rule file was checked too
    result = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts(tmp_path):
    """What each alert does, on synthetic series (promtool test rules)."""
    promtool = require_system_tool("promtool", "prometheus")
    model = F.MODEL_NAME
    tests = {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {  # nothing reports an available version -> unavailable after 2 minutes
                "interval": "1m",
                "input_series": [{"series": f'serving_model_version_available{{model_name="{model}",'
                                            f'model_version="7"}}', "values": "0x10"}],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "FraudModelUnavailable", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "FraudModelUnavailable",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"},
                                     "exp_annotations": _annotations("FraudModelUnavailable")}]},
                ],
            },
            {  # 10 % errors for 20 minutes -> error ratio alert; one available, fresh version -> no other alert
                "interval": "1m",
                "input_series": [
                    {"series": f'{REQUEST_COUNT}{{model_name="{model}",status="OK",model_version="1"}}',
                     "values": "0+90x30"},
                    {"series": f'{REQUEST_COUNT}{{model_name="{model}",status="INVALID_ARGUMENT"}}',
                     "values": "0+10x30"},
                    {"series": f'serving_model_version_available{{model_name="{model}",model_version="1"}}',
                     "values": "1x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "FraudServingHighErrorRatio",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "model_name": model},
                                     "exp_annotations": _annotations("FraudServingHighErrorRatio",
                                                                     value="10%")}]},
                    {"eval_time": "20m", "alertname": "FraudModelUnavailable", "exp_alerts": []},
                ],
            },
            {  # every request takes 0.1-1 s -> p99 above the 100 ms budget
                "interval": "1m",
                "input_series": [
                    {"series": f':tensorflow:serving:request_latency_bucket{{model_name="{model}",API="predict",'
                               f'entrypoint="REST",le="{le}"}}', "values": values}
                    for le, values in (("100000", "0x30"), ("1e+06", "0+100x30"), ("+Inf", "0+100x30"))
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "FraudServingP99LatencyHigh",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "model_name": model},
                                     "exp_annotations": _annotations("FraudServingP99LatencyHigh",
                                                                     value="991k")}]},
                ],
            },
        ],
    }
    # FraudModelStale: the newest available version (= its push time) is 0, and the test clock moves on.
    # Samples every 2 minutes: Prometheus forgets a series 5 minutes after its last sample.
    tests["tests"].append({
        "interval": "2m",
        "input_series": [{"series": f'serving_model_latest_version{{model_name="{model}"}}', "values": "0x5800"}],
        "alert_rule_test": [
            {"eval_time": "7d", "alertname": "FraudModelStale", "exp_alerts": []},
            {"eval_time": "8d", "alertname": "FraudModelStale",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "model_name": model},
                             "exp_annotations": _annotations("FraudModelStale", value="8d 0h 0m 0s")}]},
        ],
    })
    tests["tests"] += _decision_alert_tests() + _stream_alert_tests()
    path = tmp_path / "alert_tests.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _decision_alert_tests() -> list[dict]:
    """The decision service's alerts (metric names from decision/metrics.py), on synthetic series."""
    from decision import metrics as M

    decisions = M.DECISIONS._name + "_total"
    degraded = M.DEGRADED._name + "_total"
    score = M.SCORES._name + "_bucket"
    return [
        {  # 5 % of decisions degraded -> the model is effectively unreachable
            "interval": "1m",
            "input_series": [
                {"series": f'{decisions}{{decision="approve",model_version="1"}}', "values": "0+95x30"},
                {"series": f'{decisions}{{decision="approve",model_version="None"}}', "values": "0+5x30"},
                {"series": degraded, "values": "0+5x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "FraudDecisionsDegraded", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "FraudDecisionsDegraded",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"},
                                 "exp_annotations": _annotations("FraudDecisionsDegraded", value="5%")}]},
            ],
        },
        {  # a day at 1 % declines, then 10 %: a spike; the steady day alone is not
            "interval": "1m",
            "input_series": [
                {"series": f'{decisions}{{decision="approve",model_version="1"}}', "values": "0+99x1400 138600+90x100"},
                {"series": f'{decisions}{{decision="decline",model_version="1"}}', "values": "0+1x1400 1400+10x100"},
            ],
            "alert_rule_test": [
                {"eval_time": "1380m", "alertname": "FraudDeclineRateSpike", "exp_alerts": []},
                {"eval_time": "1440m", "alertname": "FraudDeclineRateSpike",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"},
                                 "exp_annotations": _annotations("FraudDeclineRateSpike", value="10%")}]},
            ],
        },
        {  # a day of low scores, then an hour of high ones
            "interval": "1m",
            "input_series": [{"series": f'{score}{{le="{le}"}}', "values": values} for le, values in (
                ("0.001", "0+10x1500 15000x100"), ("0.5", "0+10x1500 15000x100"),
                ("0.7", "0+10x1500 15000+10x100"), ("+Inf", "0+10x1500 15000+10x100"))],
            "alert_rule_test": [
                {"eval_time": "1400m", "alertname": "FraudScoreDistributionShift", "exp_alerts": []},
                {"eval_time": "1560m", "alertname": "FraudScoreDistributionShift",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"},
                                 "exp_annotations": _annotations("FraudScoreDistributionShift",
                                                                 value="0.680")}]},
            ],
        },
    ]


def _stream_alert_tests() -> list[dict]:
    """The stream consumer's alerts (decision/metrics.py): drift over the schema's limit, dead letters, lag."""
    from decision import metrics as M

    drift, limit = M.FEATURE_DRIFT._name, M.FEATURE_DRIFT_LIMIT._name
    window, messages, lag = M.DRIFT_WINDOW_EVENTS._name, M.STREAM_MESSAGES._name + "_total", M.STREAM_LAG._name
    drifted = {k: v.replace("{{ $labels.feature }}", "amount")
               for k, v in _annotations("FraudStreamFeatureDrift", value="0.500").items()}
    return [
        {  # amount drifts past its limit on a full window; city stays under its own; a thin window never alerts
            "interval": "1m",
            "input_series": [
                {"series": f'{drift}{{feature="amount"}}', "values": "0.5x30"},
                {"series": f'{limit}{{feature="amount"}}', "values": "0.3x30"},
                {"series": f'{window}{{feature="amount"}}', "values": "500x30"},
                {"series": f'{drift}{{feature="city"}}', "values": "0.1x30"},
                {"series": f'{limit}{{feature="city"}}', "values": "0.2x30"},
                {"series": f'{window}{{feature="city"}}', "values": "500x30"},
                {"series": f'{drift}{{feature="user_age"}}', "values": "0.9x30"},
                {"series": f'{limit}{{feature="user_age"}}', "values": "0.3x30"},
                {"series": f'{window}{{feature="user_age"}}', "values": "20x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "FraudStreamFeatureDrift", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "FraudStreamFeatureDrift",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "feature": "amount"},
                                 "exp_annotations": drifted}]},
            ],
        },
        {  # one dead letter a minute; a lag of 5,000 messages
            "interval": "1m",
            "input_series": [
                {"series": f'{messages}{{outcome="dead_letter"}}', "values": "0+1x30"},
                {"series": f'{messages}{{outcome="decided"}}', "values": "0+100x30"},
                {"series": lag, "values": "5000x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "FraudStreamDeadLetters",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"},
                                 "exp_annotations": _annotations("FraudStreamDeadLetters", value="10")}]},
                {"eval_time": "3m", "alertname": "FraudStreamLagging", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "FraudStreamLagging",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"},
                                 "exp_annotations": _annotations("FraudStreamLagging", value="5000")}]},
            ],
        },
    ]


def _annotations(alert: str, value: str = "") -> dict:
    """The alert's annotations with {{ $value ... }} rendered as `value` (labels are not templated here)."""
    rule = next(r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]
                if r["alert"] == alert)
    return {k: re.sub(r"\{\{ \$value[^}]*\}\}", value, v) for k, v in rule.get("annotations", {}).items()}


# --------------------------------------------------------------------------------------------------
# The local server's exposition, and Prometheus scraping it
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(request, tmp_path_factory):
    if os.environ.get("TFSERVING_REST_URL"):
        pytest.skip("monitoring is checked on the local server")
    small_run = request.getfixturevalue("small_run")
    target = serving_target(request.config, small_run.model_base, tmp_path_factory.mktemp("serving"))
    return target


def _traffic(target, n: int = 5) -> None:
    from serving.client_grpc import GrpcClient
    from serving.client_rest import RestClient, RestClientError
    from serving.example import example_transaction, typed

    document = requests.get(target.model_url + "/metadata", timeout=TIMEOUT).json()
    inputs = sorted(document["metadata"]["signature_def"]["signature_def"][F.SERVING_SIGNATURE]["inputs"])
    row = typed(example_transaction(inputs))
    rest, grpc_client = RestClient(target.rest_url, timeout=TIMEOUT), GrpcClient(target.grpc_target, timeout=TIMEOUT)
    for _ in range(n):
        rest.predict([row])
        grpc_client.predict([row])
    rest.classify([row])
    with pytest.raises(RestClientError):
        rest.predict([{**row, F.AMOUNT: "not a number"}])
    grpc_client.close()


def _samples(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, f"not a sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out.append((match.group(1), labels, float(match.group(3))))
    return out


@pytest.mark.slow
def test_metrics_exposition(local):
    _traffic(local)
    deployment = local.local
    response = requests.get(local.rest_url + deployment.metrics_path, timeout=TIMEOUT)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    help_lines = [line for line in text.splitlines() if line.startswith("# HELP")]
    assert not [line for line in help_lines if ":tensorflow:" in line]  # TF Serving prints no HELP
    assert f"# TYPE {REQUEST_COUNT} counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    samples = _samples(text)
    ok = [s for s in samples if s[0] == REQUEST_COUNT and s[1]["status"] == "OK"]
    assert {s[1]["model_name"] for s in ok} == {F.MODEL_NAME}
    versions = {int(s[1]["model_version"]) for s in ok}  # our model_version label: which version answered
    assert max(deployment.versions) in versions and versions <= set(deployment.versions)
    assert sum(s[2] for s in ok) >= 11
    assert any(s[0] == REQUEST_COUNT and s[1]["status"] == "INVALID_ARGUMENT" for s in samples)
    apis = {(s[1]["API"], s[1]["entrypoint"]) for s in samples if s[0] == ":tensorflow:serving:request_latency_count"}
    assert {("predict", "REST"), ("Predict", "GRPC"), ("classify", "REST")} <= apis
    buckets = [s for s in samples if s[0] == ":tensorflow:serving:request_latency_bucket"]
    assert buckets and buckets[0][1]["le"] == "10" and any(s[1]["le"] == "+Inf" for s in buckets)
    loads = [s for s in samples if s[0] == ":tensorflow:cc:saved_model:load_attempt_count"]
    assert {s[1]["status"] for s in loads} == {"success"} and len(loads) == len(deployment.versions)
    assert any(s[0] == ":tensorflow:serving:model_warmup_latency_count" and s[1]["status"] == "OK" for s in samples)
    assert any(s[0] == ":tensorflow:serving:request_example_counts_count" for s in samples)
    available = {int(s[1]["model_version"]): s[2] for s in samples if s[0] == "serving_model_version_available"}
    assert available == {v: 1.0 for v in deployment.versions}
    latest = [s[2] for s in samples if s[0] == "serving_model_latest_version"]
    assert latest == [float(max(deployment.versions))]


@pytest.mark.slow
def test_made_up_model_names_share_one_metric_label(local):
    """Every request names a model; names nobody serves must not each become a Prometheus series."""
    from serving.client_grpc import GrpcClient
    from serving.metrics import UNKNOWN_MODEL

    names = [f"made_up_{i}" for i in range(40)]
    client = GrpcClient(local.grpc_target, timeout=TIMEOUT)
    for name in names:
        assert requests.post(f"{local.rest_url}/v1/models/{name}:predict", json={"instances": [{}]},
                             timeout=TIMEOUT).status_code == 404
        request = client.predict_request([{}])
        request.model_spec.name = name
        with pytest.raises(grpc.RpcError):
            client.prediction.Predict(request, timeout=TIMEOUT)
    client.close()
    text = requests.get(local.rest_url + local.local.metrics_path, timeout=TIMEOUT).text
    assert not any(name in text for name in names)
    unknown = [s for s in _samples(text) if s[0] == REQUEST_COUNT and s[1]["model_name"] == UNKNOWN_MODEL]
    assert sum(s[2] for s in unknown) >= 2 * len(names), unknown


@pytest.mark.slow
def test_promtool_check_metrics_accepts_the_exposition(local):
    promtool = require_system_tool("promtool", "prometheus")
    _traffic(local, 1)
    text = requests.get(local.rest_url + local.local.metrics_path, timeout=TIMEOUT).text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # Exit 0: clean; 3: parsed, with lint findings; anything else: the exposition could not be parsed.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    upstream_style = ('should have "_total" suffix', "should not contain ':'", "no help text",
                      'should not have "_count" suffix')
    for finding in findings:
        name = finding.split()[0]
        # Only TF Serving's own names may be flagged, and only for the way upstream names them.
        assert TF_NAME.match(name), f"our own metric fails promtool's lint: {finding}"
        assert any(reason in finding for reason in upstream_style), finding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_prometheus_scrapes_the_server(local, tmp_path):
    prometheus = require_system_tool("prometheus", "prometheus")
    deployment = local.local
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [{"job_name": "tf-serving", "metrics_path": deployment.metrics_path,
                            "static_configs": [{"targets": [f"127.0.0.1:{local.rest_url.rsplit(':', 1)[1]}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        _traffic(local, 3)

        def query(expr: str):
            response = requests.get(f"{api}/query", params={"query": expr}, timeout=TIMEOUT)
            response.raise_for_status()
            return response.json()["data"]["result"]

        deadline = time.monotonic() + 60
        result = []
        while time.monotonic() < deadline and not result:
            try:
                result = query(f'sum by (model_name) ({REQUEST_COUNT}{{status="OK"}})')
            except requests.RequestException:
                result = []
            time.sleep(0.5)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        (series,) = result
        assert series["metric"] == {"model_name": F.MODEL_NAME}
        assert float(series["value"][1]) >= 6
        by_version = query(f'sum by (model_version) ({REQUEST_COUNT}{{model_name="{F.MODEL_NAME}",status="OK"}})')
        assert str(max(deployment.versions)) in {s["metric"]["model_version"] for s in by_version}
        latest = query(f'serving_model_latest_version{{model_name="{F.MODEL_NAME}"}}')
        assert float(latest[0]["value"][1]) == max(deployment.versions)
        targets = requests.get(f"{api}/targets", timeout=TIMEOUT).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        def rules():
            groups = requests.get(f"{api}/rules", timeout=TIMEOUT).json()["data"]["groups"]
            return {r["name"]: r for g in groups for r in g["rules"]}

        # A model is available: once Prometheus has evaluated the rules on scraped data (the first
        # evaluation may precede the first scrape and go pending), the unavailable alert is inactive.
        deadline = time.monotonic() + 30
        while rules()["FraudModelUnavailable"]["state"] != "inactive" and time.monotonic() < deadline:
            time.sleep(0.5)
        current = rules()
        assert current["FraudModelUnavailable"]["state"] == "inactive", json.dumps(current)[:2000]
        assert all(r["health"] == "ok" for r in current.values()), json.dumps(current)[:2000]
    finally:
        process.terminate()
        process.wait(15)
        log.close()


# --------------------------------------------------------------------------------------------------
# Without a monitoring config the path is 404 (as TF Serving); the status exporter for the real container
# --------------------------------------------------------------------------------------------------
def test_metrics_path_is_404_without_monitoring_config():
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from serving.rest import RestApi

    async def get(api: RestApi, path: str) -> tuple[int, str]:
        async with TestClient(TestServer(api.application())) as client:
            response = await client.get(path)
            return response.status, await response.text()

    path = prometheus_path(parse_monitoring_config(MONITORING_CONFIG))
    assert asyncio.run(get(RestApi(None, ServingMetrics(), None, None), path))[0] == 404
    status, text = asyncio.run(get(RestApi(None, ServingMetrics(), None, path), path))
    assert status == 200 and REQUEST_COUNT in text


@pytest.mark.slow
def test_status_exporter_reports_available_versions(local):
    from serving.status_exporter import Exporter, make_server

    exporter = Exporter(local.rest_url, [F.MODEL_NAME], interval=0.2, timeout=TIMEOUT)
    server = make_server(exporter, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exporter.refresh()
        text = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=TIMEOUT).text
        samples = _samples(text)
        available = {int(s[1]["model_version"]): s[2] for s in samples if s[0] == "serving_model_version_available"}
        assert available == {v: 1.0 for v in local.local.versions}
        assert [s[2] for s in samples if s[0] == "serving_model_latest_version"] == [max(local.local.versions)]
        dead = Exporter(f"http://127.0.0.1:{_free_port()}", [F.MODEL_NAME], interval=1, timeout=1)
        dead.refresh()
        assert not [s for s in _samples(dead.exposition()) if s[0].startswith("serving_model")]
    finally:
        server.shutdown()
        server.server_close()


def test_serving_files_use_the_names_in_fraud_features():
    """Config files cannot import fraud.features: check their literals against it instead."""
    for path in (MODELS_CONFIG, ALERT_RULES, COMPOSE):
        text = Path(path).read_text()
        assert F.MODEL_NAME in text, path
