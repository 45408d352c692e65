"""The decision service end to end: raw transactions in time order through the service, in front of the model
server under test (the local server on the session's pushed model), with the embedded store and with Redis."""
from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import time

import pandas as pd
import pytest

from decision.service import DecisionOptions, DecisionService, standardise
from decision.state import MemoryStore, RedisStore
from fraud import behaviour as B
from fraud import features as F
from fraud import ingest, scoring
from tests.helpers import require_system_tool

RAW_COLUMNS = ("transaction_id", "timestamp", "amount", "currency", "user_id", "restaurant_id", "city", "device_id",
               "payment_method", "transaction_type", "home_city", "user_age", "user_gender", "device_type",
               "os_version", "ip_address")


@pytest.fixture(scope="module")
def stream(small_data):
    """~1,200 raw transactions of a sample of cards, in time order, as a terminal would send them, and the
    offline truth for them: behavioural features and in-process scores, labels known."""
    raw = ingest.read_csv_dir(small_data)
    users = sorted(raw[F.USER_ID].unique())[::8]
    raw = raw[raw[F.USER_ID].isin(users)].copy()
    standard = ingest.standardise(raw, require_label=True).frame
    raw = ingest.raw_in_time_order(raw, standard)
    offline = B.compute_offline(B.events_from_frame(standard))
    return raw, standard, offline


@pytest.fixture(scope="module")
def offline_scores(stream, target):
    if target.local is None:
        pytest.skip("in-process scores need the local deployment's model files")
    _, standard, _ = stream
    frame = B.add_behaviour_columns(standard)
    version_dir = target.local.base / str(max(target.local.versions))
    scores = scoring.score_frame(scoring.load_signature(version_dir), frame)
    return dict(zip(frame[F.TRANSACTION_ID], scores.tolist()))


def _transactions(raw: pd.DataFrame):
    columns = [c for c in RAW_COLUMNS if c in raw.columns]
    for record in raw[columns + [F.LABEL]].to_dict("records"):
        label = int(record.pop(F.LABEL))
        yield record, label


def _options(target, **overrides) -> DecisionOptions:
    return DecisionOptions(serving=f"grpc://{target.grpc_target}", model_dir=target.local.base if target.local else None,
                           deadline_ms=2000, **overrides)


async def _replay(service: DecisionService, raw, *, labels=True, restart_every: int | None = None, make=None):
    """Decide every transaction in order, reporting its label right after (known at once), optionally with
    a fresh service (a restart) every `restart_every` transactions."""
    answers = {}
    for i, (tx, label) in enumerate(_transactions(raw)):
        if restart_every and i and i % restart_every == 0:
            await service.model.close()
            service = make()
        answers[tx["transaction_id"]] = await service.decide(tx)
        if labels:
            await service.label(tx["transaction_id"], label)
    return answers, service


def _check_parity(answers, stream, offline_scores, stored_features):
    _, standard, offline = stream
    assert len(answers) == len(standard) > 500
    bad = [(tid, name, offline[tid][name], got[name]) for tid, got in stored_features.items()
           for name in F.BEHAVIOUR_FEATURES if not math.isclose(got[name], offline[tid][name], abs_tol=1e-6)]
    assert not bad, f"{len(bad)} features differ from offline, e.g. {bad[:4]}"
    assert sum(1 for f in stored_features.values() if f["restaurant_fraud_rate_delayed_7d"] > 0) > 10
    diffs = [abs(answers[tid]["score"] - offline_scores[tid]) for tid in answers]
    assert max(diffs) < 1e-5, f"scores differ from the in-process model by up to {max(diffs)}"
    outcomes = {a["decision"] for a in answers.values()}
    assert "approve" in outcomes and outcomes - {"approve"}, f"only {outcomes}: the thresholds were not used"
    assert not any(a["degraded"] for a in answers.values())


async def _stored_features(store, ids):
    return {tid: (await store.get_decision(tid))["features"] for tid in ids}


def test_parity_with_offline_features_and_scores_on_the_embedded_store(stream, offline_scores, target):
    raw, _, _ = stream

    async def main():
        service = DecisionService(_options(target), store=MemoryStore())
        answers, service = await _replay(service, raw)
        features = await _stored_features(service.store, answers)
        alerts = await service.store.alerts(100_000)
        await service.close()
        return answers, features, alerts

    answers, features, alerts = asyncio.run(main())
    _check_parity(answers, stream, offline_scores, features)
    flagged = {tid for tid, a in answers.items() if a["decision"] != "approve"}
    assert {a["transaction_id"] for a in alerts} == flagged
    sample = next(a for a in answers.values() if a["decision"] != "approve")
    assert sample["reasons"] and sample["thresholds"]["review"] < sample["score"]
    assert sample["model_version"] == max(target.local.versions)
    # the thresholds are the ones the pipeline shipped with that version (review: the alert budget's; decline:
    # the precision target's, NEVER when the target was not reached)
    from fraud.threshold import read_threshold

    shipped = read_threshold(str(target.local.base / str(sample["model_version"])))
    assert shipped.decline_precision_target is not None
    assert sample["thresholds"] == {"review": shipped.threshold,
                                    "decline": max(shipped.decline_threshold, shipped.threshold)}
    for tid, answer in answers.items():
        score = offline_scores[tid]  # the answer's score is rounded to 6 decimals
        expected = ("decline" if score > answer["thresholds"]["decline"] else
                    "review" if score > answer["thresholds"]["review"] else "approve")
        assert answer["decision"] == expected, answer  # no business rules in this test


def test_retries_late_events_bad_input_and_a_model_server_that_is_down(stream, target):
    raw, _, _ = stream
    transactions = [tx for tx, _ in _transactions(raw.head(30))]

    async def main():
        store = MemoryStore()
        service = DecisionService(_options(target), store=store)
        first = await service.decide(transactions[0])
        state_before = dict(store._data)
        again = await service.decide(transactions[0])
        assert again["replayed"] and {k: v for k, v in again.items() if k != "replayed"} == first
        assert store._data == state_before, "a retry must not touch the state"
        late_tx = {**transactions[1], "transaction_id": "late-1", "timestamp": "2020-01-01T12:00:00Z",
                   "user_id": transactions[0]["user_id"]}
        late = await service.decide(late_tx)
        assert "late" in late and late["decision"] in ("approve", "review", "decline")
        user_key = f"user:{transactions[0]['user_id']}"
        assert store._data[user_key] == state_before[user_key], "a late event is not inserted"
        for broken, field in (({**transactions[2], "amount": "-5"}, "amount"),
                              ({k: v for k, v in transactions[2].items() if k != "user_id"}, "user_id"),
                              ({**transactions[2], "timestamp": "yesterday"}, "timestamp")):
            with pytest.raises(Exception) as info:
                await service.decide(broken)
            assert type(info.value).__name__ == "BadTransaction" and field in str(info.value)
        assert f"decision:{transactions[2]['transaction_id']}" not in store._data
        # A crash after step 1 (the event recorded, the decision pending): the retry scores the stored features
        # and completes the record; the state is not updated a second time.
        row, event = standardise(transactions[4])
        pending = await service.record(row, event)
        assert "response" not in pending and pending["features"]
        state_after_step_1 = {k: v for k, v in store._data.items() if not k.startswith("decision:")}
        completed = await service.decide(transactions[4])
        assert "replayed" not in completed and completed["score"] is not None
        assert {k: v for k, v in store._data.items() if not k.startswith("decision:")} == state_after_step_1
        record = await store.get_decision(transactions[4]["transaction_id"])
        assert record["response"] == completed and record["features"] == pending["features"]
        # Two retries of one transaction at once: one answer, one alert at most, the state updated once.
        before = len(store._alerts)
        twins = await asyncio.gather(*(service.decide(transactions[5]) for _ in range(3)))
        assert len({(t["decision"], t["score"]) for t in twins}) == 1 and sum("replayed" not in t for t in twins) == 1
        assert len(store._alerts) - before == (twins[0]["decision"] != "approve")
        await service.close()

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        down = DecisionService(DecisionOptions(serving=f"127.0.0.1:{dead_port}", deadline_ms=200,
                                               review_threshold=0.3), store=MemoryStore())
        began = time.perf_counter()
        answer = await down.decide(transactions[3])
        took = time.perf_counter() - began
        assert answer["degraded"] is True and answer["score"] is None and took < 2.0
        assert await down.store.get_decision(transactions[3]["transaction_id"]) is not None  # state updated once
        again = await down.decide(transactions[3])
        assert again["replayed"]
        await down.close()

    asyncio.run(main())


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = require_system_tool("redis-server", "redis-server")
    workdir = tmp_path_factory.mktemp("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_parity_through_redis_with_restarts_and_two_services_sharing_it(stream, offline_scores, target, redis_url):
    raw, _, _ = stream

    async def main():
        stores = []

        def make():
            store = RedisStore(redis_url, timeout_s=2.0, prefix="parity")
            stores.append(store)
            return DecisionService(_options(target), store=store)

        await make().store._client.flushdb()
        service = make()
        answers, service = await _replay(service, raw, restart_every=400, make=make)
        features = await _stored_features(service.store, answers)
        for store in stores:
            await store.close()
        return answers, features

    answers, features = asyncio.run(main())
    _check_parity(answers, stream, offline_scores, features)

    async def two_services():
        """Two services on one Redis taking turns on one stream answer exactly as one service; and at the same
        time on one hot card (same second, so none is late) they lose no update."""
        a = DecisionService(_options(target), store=RedisStore(redis_url, timeout_s=2.0, prefix="two"))
        b = DecisionService(_options(target), store=RedisStore(redis_url, timeout_s=2.0, prefix="two"))
        txs = [tx for tx, _ in _transactions(raw.head(200))]
        shared = {tx["transaction_id"]: await (a if i % 2 else b).decide(tx) for i, tx in enumerate(txs)}
        one = DecisionService(_options(target), store=MemoryStore())
        alone = {tx["transaction_id"]: await one.decide(tx) for tx in txs}
        hot = [{**txs[0], "transaction_id": f"hot-{i}", "timestamp": "2027-01-01T20:00:00-05:00",
                "user_id": "hot-card"} for i in range(40)]
        answers = await asyncio.gather(*((a if i % 2 else b).decide(tx) for i, tx in enumerate(hot)))
        card = await a.store.read({"user": "hot-card"}, "probe")
        await a.store.release(card)
        for service in (a, b, one):
            await service.close()
        return shared, alone, answers, card.values["user"]

    shared, alone, hot_answers, card = asyncio.run(two_services())
    assert shared.keys() == alone.keys()
    differ = [tid for tid in shared if (shared[tid]["score"], shared[tid]["decision"]) !=
              (alone[tid]["score"], alone[tid]["decision"])]
    assert not differ, f"{len(differ)} decisions differ between two services and one, e.g. {differ[:3]}"
    assert len(hot_answers) == 40 and not any("late" in x for x in hot_answers)
    assert len(card["events"]) == 40, "concurrent updates of one card must all be kept (atomic per entity)"
    assert sorted(ev[1] for ev in card["events"]) == sorted(f"hot-{i}" for i in range(40))


def test_redis_down_is_a_clear_error_and_changes_nothing(stream, target):
    raw, _, _ = stream
    tx = next(_transactions(raw))[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        service = DecisionService(_options(target), store=RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.3))
        with pytest.raises(Exception) as info:
            await service.decide(tx)
        await service.close()
        return info.value

    error = asyncio.run(main())
    assert type(error).__name__ == "StateUnavailable" and "cannot be reached" in str(error)


def test_http_api_answers_4xx_with_messages_and_keeps_serving(stream, target, tmp_path):
    import sqlalchemy as sa
    from aiohttp.test_utils import TestClient, TestServer

    from decision.http import application
    from fraud import sql_source

    raw, _, _ = stream
    txs = [tx for tx, _ in _transactions(raw.head(5))]
    database = sql_source.sqlite_url(tmp_path / "source.db")  # the pipeline's database source
    engine = sa.create_engine(database)
    sql_source.schema().create_all(engine)

    def stored_labels():
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT transaction_id, {F.LABEL}, reported_at "
                                                          "FROM labels ORDER BY label_id"))]

    async def main():
        service = DecisionService(_options(target, labels_db=database), store=MemoryStore())
        async with TestClient(TestServer(application(service))) as client:
            ok = await client.post("/v1/decisions", json=txs[0])
            body = await ok.json()
            assert ok.status == 200 and body["transaction_id"] == txs[0]["transaction_id"]
            assert set(body) >= {"decision", "score", "model_version", "reasons", "thresholds", "degraded"}
            bad = await client.post("/v1/decisions", data=b"{not json")
            assert bad.status == 400 and "not JSON" in (await bad.json())["error"]
            missing = await client.post("/v1/decisions", json={k: v for k, v in txs[1].items() if k != "amount"})
            assert missing.status == 422 and "amount" in (await missing.json())["error"]
            label = await client.post("/v1/labels", json={"transaction_id": txs[0]["transaction_id"],
                                                           "is_fraudulent": 1, "reported_at": "2026-03-02"})
            assert label.status == 200 and (await label.json())["applied_to_state"] is True
            assert (await label.json())["written_to_database"] is True
            assert stored_labels() == [(txs[0]["transaction_id"], 1, "2026-03-02")]
            # Both the card's and the restaurant's snapshots took it (their delayed fraud rates use it).
            ids = {"user": txs[0][F.USER_ID], "restaurant": txs[0][F.RESTAURANT_ID]}
            snap = await service.store.read(ids, "check")
            await service.store.release(snap)
            assert {k: snap.values[k]["labels"].get(txs[0]["transaction_id"]) for k in ids} == \
                {"user": 1, "restaurant": 1}
            unknown = await client.post("/v1/labels", json={"transaction_id": "nope", "is_fraudulent": 0})
            assert unknown.status == 404
            wrong = await client.post("/v1/labels", json={"transaction_id": txs[0]["transaction_id"],
                                                          "is_fraudulent": 7})
            assert wrong.status == 422
            still = await client.post("/v1/decisions", json=txs[1])
            assert still.status == 200
            metrics = await (await client.get("/metrics")).text()
            assert "fraud_decisions_total" in metrics and "fraud_requests_rejected_total" in metrics
            assert (await client.get("/healthz")).status == 200
            labels = await service.store.labels()
            assert labels and labels[0][F.LABEL] == 1
            assert len(stored_labels()) == 1, "refused labels are not written"
        # The labels database unreachable: 503 with its message, the state and the database unchanged.
        store = service.store
        broken = DecisionService(_options(target, labels_db=sql_source.sqlite_url(tmp_path / "gone.db")),
                                 store=store)
        async with TestClient(TestServer(application(broken))) as client:
            before = dict(store._data)
            down = await client.post("/v1/labels", json={"transaction_id": txs[1]["transaction_id"],
                                                          "is_fraudulent": 1})
            assert down.status == 503 and "gone.db" in (await down.json())["error"]
            assert store._data == before and len(await store.labels()) == 1
        await broken.model.close()
        await service.close()

    asyncio.run(main())


def test_replay_command_prints_the_days_decisions(small_run):
    from tests.helpers import run_fraudctl

    proc = run_fraudctl("decide", "replay", "--data", small_run.data_dir, "--model-base", small_run.model_base,
                        timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    replayed = int(out.split("Live replay of ", 1)[1].split(": ", 1)[1].split(" transactions", 1)[0])
    counts = {k: int(out.split(f"{k} ", 1)[1].split(",")[0].split()[0]) for k in ("approve", "review", "decline")}
    assert replayed > 50 and sum(counts.values()) == replayed
    assert "degraded answers: 0" in out and "alerts raised: " in out
    alerts = int(out.split("alerts raised: ", 1)[1].split(";")[0])
    assert alerts == counts["review"] + counts["decline"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_degraded_decisions_raise_an_alert_through_prometheus_and_alertmanager(stream, tmp_path):
    """The real alert path: the decision service (model server unreachable) -> Prometheus (the repository's
    rule, its `for:` shortened to 0s so the test need not wait 2 minutes) -> Alertmanager -> a webhook."""
    import json as jsonlib
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import requests
    import yaml

    from tests.helpers import FRAUDCTL, REPO

    prometheus = require_system_tool("prometheus", "prometheus")
    alertmanager = require_system_tool("prometheus-alertmanager", "prometheus-alertmanager")
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    am_port, prom_port, decide_port, dead_port = _port(), _port(), _port(), _port()
    (tmp_path / "am.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": f"http://127.0.0.1:{hook.server_port}/alert"}]}]}))
    rules = yaml.safe_load((REPO / "serving" / "alert_rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "FraudDecisionsDegraded":
                rule["for"] = "0s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "decision-service",
                            "static_configs": [{"targets": [f"127.0.0.1:{decide_port}"]}]}]}))
    log = open(tmp_path / "daemons.log", "wb")
    processes = [
        subprocess.Popen([alertmanager, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
                          f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                          "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                          "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen([FRAUDCTL, "decide", "serve", "--serving", f"grpc://127.0.0.1:{dead_port}", "--port",
                          str(decide_port), "--deadline-ms", "100", "--review-threshold", "0.3"],
                         stdout=log, stderr=subprocess.STDOUT),
    ]
    try:
        _wait_http(f"http://127.0.0.1:{decide_port}/healthz")
        raw, _, _ = stream
        txs = [tx for tx, _ in _transactions(raw.head(40))]
        deadline = time.monotonic() + 90
        i = 0
        while time.monotonic() < deadline and not any(
                a["labels"].get("alertname") == "FraudDecisionsDegraded" for r in received for a in r["alerts"]):
            answer = requests.post(f"http://127.0.0.1:{decide_port}/v1/decisions",
                                   json={**txs[i % len(txs)], "transaction_id": f"am-{i}"}, timeout=10).json()
            assert answer["degraded"] is True
            i += 1
            time.sleep(0.2)
        alerts = [a for r in received for a in r["alerts"] if a["labels"].get("alertname") == "FraudDecisionsDegraded"]
        assert alerts, f"no alert delivered; log:\n{(tmp_path / 'daemons.log').read_text()[-3000:]}"
        assert alerts[0]["status"] == "firing" and alerts[0]["labels"]["severity"] == "critical"
        assert "without the model" in alerts[0]["annotations"]["summary"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
        hook.shutdown()


def test_canary_scores_in_the_shadow_and_never_decides(stream, target):
    if target.local is None or "canary" not in target.local.labels:
        pytest.skip("needs the local deployment's stable/canary labels")
    raw, _, _ = stream
    txs = [tx for tx, _ in _transactions(raw.head(3))]

    async def main():
        shadowed = DecisionService(_options(target, canary_label="canary"), store=MemoryStore())
        plain = DecisionService(_options(target), store=MemoryStore())
        broken = DecisionService(_options(target, canary_label="no-such-label"), store=MemoryStore())
        out = [(await shadowed.decide(tx), await plain.decide(tx), await broken.decide(tx)) for tx in txs]
        for service in (shadowed, plain, broken):
            await service.close()
        return out

    for with_shadow, without, broken in asyncio.run(main()):
        shadow = with_shadow.pop("shadow")
        assert shadow["label"] == "canary" and shadow["model_version"] == target.local.labels["canary"]
        assert abs(shadow["score"] - with_shadow["score"]) < 1e-6  # the same weights pushed twice
        assert with_shadow == without, "the shadow must not change the decision"
        assert "Unrecognized servable version label" in broken.pop("shadow")["error"]
        assert broken == without


def test_alerts_are_posted_to_the_webhook_and_a_dead_webhook_fails_no_decision(stream, target):
    from aiohttp import web

    from decision import metrics as M

    raw, _, _ = stream
    txs = [tx for tx, _ in _transactions(raw.head(12))]

    async def main():
        received = []

        async def hook(request):
            received.append(await request.json())
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        # review everything with a score above 0: every decision raises an alert
        service = DecisionService(_options(target, review_threshold=0.0,
                                           alert_webhook=f"http://127.0.0.1:{port}/hook"), store=MemoryStore())
        answers = [await service.decide(tx) for tx in txs[:6]]
        await service.close()  # waits for the posts in flight
        await runner.cleanup()
        flagged = [a["transaction_id"] for a in answers if a["decision"] != "approve"]
        assert len(flagged) >= 5 and sorted(r["transaction_id"] for r in received) == sorted(flagged)
        assert all(r["decision"] in ("review", "decline") and r["reasons"] for r in received)

        failed_before = M.WEBHOOK.labels(result="failed")._value.get()
        dead = DecisionService(_options(target, review_threshold=0.0,
                                        alert_webhook=f"http://127.0.0.1:{port}/hook"), store=MemoryStore())
        answers = [await dead.decide(tx) for tx in txs[6:]]  # the receiver is gone now
        await dead.close()
        assert all("decision" in a and not a["degraded"] for a in answers)
        assert M.WEBHOOK.labels(result="failed")._value.get() - failed_before == sum(
            a["decision"] != "approve" for a in answers) > 0

    asyncio.run(main())


def test_the_readmes_decision_commands_run_as_written(target, tmp_path):
    """README "Real-time decisions": the service command and both curl requests, line for line, against the model
    server under test (only the ports and the model directory are this test's)."""
    import json
    import re

    import requests

    from tests.helpers import CURL_PRELUDE, FRAUDCTL, readme_block

    require_system_tool("curl", "curl")
    if target.local is None:
        pytest.skip("needs the local deployment's model directory")
    block = readme_block("## Real-time decisions", "bash")
    serve, _, requests_script = block.partition("\n")
    assert serve.startswith("fraudctl decide serve ") and requests_script.count("curl ") == 2
    port = _port()
    command = (serve.replace("grpc://127.0.0.1:8500", f"grpc://{target.grpc_target}")
               .replace("runs/demo/serving_models/fraud_detector", str(target.local.base)).split())
    log = open(tmp_path / "decide.log", "wb")
    service = subprocess.Popen([FRAUDCTL, *command[1:], "--port", str(port)], cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        script = requests_script.replace("localhost:8600", f"127.0.0.1:{port}")
        proc = subprocess.run(["bash", "-c", CURL_PRELUDE + script], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], (tmp_path / "decide.log").read_text())
        decision_text, label_text = [line for line in proc.stdout.splitlines() if line.strip()][:2]
        decision = json.loads(decision_text)
        assert decision["transaction_id"] == "T-1001" and decision["decision"] in ("approve", "review", "decline")
        assert decision["degraded"] is False and 0.0 <= decision["score"] <= 1.0 and decision["reasons"]
        assert re.search(r'"transaction_id":\s*"T-1001"', label_text), label_text
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        service.terminate()
        service.wait(15)
