"""The stream consumer (`fraudctl decide consume`) for real: Redis Streams on Debian's redis-server, the model
server under test, the consumer as its own process where it is killed. Kafka runs against librdkafka's mock
cluster (no Kafka broker package exists here)."""
from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from decision import metrics as M
from decision import stream as S
from decision.consumer import Consumer, ConsumerOptions
from decision.service import DecisionOptions, DecisionService
from decision.state import MemoryStore
from fraud import features as F
from fraud import ingest
from tests.helpers import REPO, require_system_tool
from tests.servers import RedisServer

GROUP = "fraud-decisions"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-stream"))
    server.start()
    yield server
    server.stop()


@functools.lru_cache(maxsize=None)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


@pytest.fixture(scope="module")
def messages(small_data):
    """~700 transactions of a sample of cards, in event-time order, as stream messages (no labels), and their
    labels."""
    raw = ingest.read_csv_dir(small_data)
    users = sorted(raw[F.USER_ID].unique())[::14]
    sample = small_data.parent / "stream_sample"
    sample.mkdir(exist_ok=True)
    raw[raw[F.USER_ID].isin(users)].to_csv(sample / "sample.csv", index=False)
    records = S.csv_messages(sample)
    labelled = S.csv_messages(sample, without_labels=False)
    labels = {r[F.TRANSACTION_ID]: int(r[F.LABEL]) for r in labelled}
    assert len(records) > 500
    return records, labels


BAD = [
    ({"transaction_id": "bad-amount", "timestamp": "2026-03-01 12:00:00", "amount": "lots", "user_id": "u"},
     "amount"),
    ({"timestamp": "2026-03-01 12:00:00", "amount": "10", "user_id": "u"}, "transaction_id"),
    ({"transaction_id": "bad-age", "timestamp": "2026-03-01 12:00:00", "amount": "10", "user_id": "u",
      "user_age": "5"}, "user_age=5 is outside the schema's range"),
]


def _with_bad(records):
    """The messages with the three invalid ones spread through them."""
    out = list(records)
    for k, (bad, _) in enumerate(BAD):
        out.insert((k + 1) * len(records) // 4, bad)
    return out


def _consume_cmd(target, source, decisions, state, *extra):
    return [sys.executable, "-m", "fraudctl", "decide", "consume", "--source", source, "--decisions", decisions,
            "--serving", f"grpc://{target.grpc_target}", "--state", state, "--deadline-ms", "5000",
            "--model-dir", str(target.local.base), *map(str, extra)]


def _decided(url: str) -> list[dict]:
    endpoint = S.parse(url)
    return [fields for _, fields in _redis(endpoint.broker).xrange(endpoint.name)]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _entity_state(url: str) -> dict:
    """Every entity snapshot in the store (cards, devices, restaurants): what the next decision reads."""
    client = _redis(url)
    keys = [k for k in client.scan_iter("fraud:*") if not k.startswith(("fraud:decision:", "fraud:alerts",
                                                                           "fraud:labels"))]
    return {k: json.loads(client.get(k)) for k in keys}


def _answers(url: str, ids) -> dict:
    client = _redis(url)
    return {tid: json.loads(client.get(f"fraud:decision:{tid}"))["response"] for tid in ids}


def test_a_killed_consumer_decides_every_transaction_exactly_once_and_the_state_equals_an_uninterrupted_run(
        messages, target, redis_server, tmp_path):
    if target.local is None:
        pytest.skip("needs the local deployment's model files for the shipped thresholds")
    records, _ = messages
    stream = _with_bad(records)
    valid_ids = [r["transaction_id"] for r in records]

    # The reference: one uninterrupted consumer, on its own database
    ref = redis_server.url(1)
    asyncio.run(S.redis_publish(f"{ref}/tx", stream))
    done = subprocess.run(_consume_cmd(target, f"{ref}/tx", f"{ref}/decisions", ref, "--idle-exit-seconds", 2),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"decided {len(records):,}" in done.stdout and "dead letter 3" in done.stdout, done.stdout

    # Killed twice mid-stream (SIGKILL: no clean-up at all), restarted each time
    url = redis_server.url(2)
    asyncio.run(S.redis_publish(f"{url}/tx", stream))
    for fraction in (0.3, 0.6):
        proc = subprocess.Popen(_consume_cmd(target, f"{url}/tx", f"{url}/decisions", url, "--batch", 50),
                                stdout=open(tmp_path / f"consumer-{fraction}.log", "w"), stderr=subprocess.STDOUT,
                                cwd=REPO)
        _wait_for(lambda: len(_decided(f"{url}/decisions")) >= fraction * len(records), 300, f"{fraction:.0%}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done = subprocess.run(_consume_cmd(target, f"{url}/tx", f"{url}/decisions", url, "--idle-exit-seconds", 2),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr

    decided = _decided(f"{url}/decisions")
    ids = [d["transaction_id"] for d in decided]
    assert sorted(ids) == sorted(valid_ids), "gaps or duplicates in the decisions stream"
    assert len(set(ids)) == len(ids)
    assert {d["decision"] for d in decided} <= {"approve", "review", "decline"}
    assert all(isinstance(json.loads(d["reasons"]), list) for d in decided)
    assert all(d["degraded"] in ("true", "false") for d in decided)
    # nothing left pending in the group
    assert _redis(url).xpending("tx", GROUP)["pending"] == 0

    dead = _decided(f"{url}/tx-dead-letters")
    assert len(dead) == 3
    for (_, reason), entry in zip(BAD, dead):
        assert reason in entry["error"], entry
        assert entry["source_id"]

    assert _entity_state(url) == _entity_state(ref)
    assert _answers(url, valid_ids) == _answers(ref, valid_ids)
    uninterrupted = {d["transaction_id"]: d for d in _decided(f"{ref}/decisions")}
    assert {d["transaction_id"]: d for d in decided} == uninterrupted


def test_the_consumer_waits_for_a_stopped_redis_and_resumes_without_losing_an_event(
        messages, target, redis_server, tmp_path):
    records, _ = messages
    half = len(records) // 2
    url = redis_server.url(3)
    asyncio.run(S.redis_publish(f"{url}/tx", records[:half]))
    proc = subprocess.Popen(_consume_cmd(target, f"{url}/tx", f"{url}/decisions", url, "--idle-exit-seconds", 4),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        _wait_for(lambda: len(_decided(f"{url}/decisions")) >= half // 3, 300, "the first decisions")
        redis_server.stop()
        time.sleep(3)
        assert proc.poll() is None, "the consumer gave up while Redis was down"
        redis_server.start()
        asyncio.run(S.redis_publish(f"{url}/tx", records[half:]))
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        if redis_server.proc is None:
            redis_server.start()
    assert proc.returncode == 0, out
    assert "waiting" in out, "the outage was not noticed:\n" + out[-2000:]
    ids = [d["transaction_id"] for d in _decided(f"{url}/decisions")]
    assert sorted(ids) == sorted(r["transaction_id"] for r in records)


def test_drift_gauges_see_a_shifted_stream_and_not_a_faithful_one(messages, target, redis_server, small_run,
                                                                  tmp_path):
    records, _ = messages

    def drift_after(stream, db):
        url = redis_server.url(db)
        asyncio.run(S.redis_publish(f"{url}/tx", stream))
        # the sample is thin (under one transaction an hour): the window spans all of it
        options = ConsumerOptions(source=f"{url}/tx", decisions=f"{url}/decisions", training_stats=small_run.root,
                                  drift_window_s=60 * 86400, idle_exit_s=1.0)

        async def main():
            service = DecisionService(DecisionOptions(serving=f"grpc://{target.grpc_target}", deadline_ms=5000,
                                                      review_threshold=0.5), store=MemoryStore())
            consumer = Consumer(options, None, service=service)
            try:
                await consumer.run()
                return consumer.update_drift()
            finally:
                await consumer.close()
        return asyncio.run(main())

    faithful = drift_after(records, 4)
    def shift(r):  # forty times the amount (an amount may be missing), every payment in Lima
        return {**r, "transaction_id": r["transaction_id"] + "-x", "city": "Lima",
                "amount": str(float(r["amount"]) * 40) if r["amount"] else r["amount"]}

    shifted = drift_after([shift(r) for r in records], 5)
    assert {"amount", "city"} <= set(faithful) and {"amount", "city"} <= set(shifted)
    for name in ("amount", "city"):
        value, limit, n = shifted[name]
        assert value > limit, (name, shifted[name])
        assert faithful[name][0] < shifted[name][0], (name, faithful[name], shifted[name])
        assert n > 500
    # the gauges carry the last computation, with the schema's limits next to them
    exposition = M.exposition().decode()
    assert f'fraud_stream_feature_drift{{feature="amount"}} {shifted["amount"][0]}' in exposition
    assert 'fraud_stream_feature_drift_limit{feature="amount"} 0.3' in exposition


# ---------------------------------------------------------------------------------------------------------------
# Kafka, against librdkafka's mock cluster
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kafka_bootstrap():
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": ""})  # keeps the cluster alive
    brokers = holder.list_topics(timeout=10).brokers
    broker = next(iter(brokers.values()))
    yield f"{broker.host}:{broker.port}"
    holder.flush(1)


def _kafka_messages(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[dict]:
    from confluent_kafka import Consumer as KafkaConsumer

    reader = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time()}",
                            "auto.offset.reset": "earliest"})
    reader.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        m = reader.poll(0.5)
        if m is not None and m.error() is None:
            out.append(json.loads(m.value()))
    reader.close()
    return out


class Crash(Exception):
    """The consumer dying between writing its outputs and committing its offsets."""


def test_kafka_transport_decides_commits_and_redelivers_what_was_not_committed(messages, target, kafka_bootstrap):
    records, _ = messages
    records = records[:120]
    source = f"kafka://{kafka_bootstrap}/tx"
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for r in records + [{"transaction_id": "k-bad", "timestamp": "nope", "amount": "1", "user_id": "u"}]:
        producer.produce("tx", json.dumps(r).encode(), key=r["user_id"].encode())  # one card, one partition
    producer.produce("tx", b"{not json")
    assert producer.flush(30) == 0

    async def consume(limit_batches=None):
        # A crashed consumer never leaves the group: its partitions move once its session times out (6 s here)
        options = ConsumerOptions(source=source, decisions=f"kafka://{kafka_bootstrap}/decisions", batch=40,
                                  block_ms=500, idle_exit_s=20.0,
                                  kafka_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        store = stores.setdefault("state", MemoryStore())
        service = DecisionService(DecisionOptions(serving=f"grpc://{target.grpc_target}", deadline_ms=5000,
                                                  review_threshold=0.5), store=store)
        consumer = Consumer(options, None, service=service)
        if limit_batches is not None:  # a crash after the decisions were written, before the commit
            real = consumer.transport.publish_and_ack
            calls = []

            async def crashing(outputs, acked):
                calls.append(1)
                if len(calls) > limit_batches:
                    await real(outputs, [])  # written, never committed
                    raise Crash()
                await real(outputs, acked)
            consumer.transport.publish_and_ack = crashing
        try:
            return await consumer.run()
        except Crash:
            return None
        finally:
            if limit_batches is None:
                await consumer.close()
            else:
                await asyncio.to_thread(consumer.transport._consumer.close)  # leaves the group, no commit

    stores: dict = {}
    assert asyncio.run(consume(limit_batches=1)) is None
    counts = asyncio.run(consume())
    # at least once: the uncommitted batch came again and was answered from its decision records
    assert counts["replayed"] >= 1 and counts["decided"] + counts["replayed"] >= len(records) - 40
    decided = _kafka_messages(kafka_bootstrap, "decisions", len(records) + counts["replayed"])
    by_id: dict = {}
    for d in decided:
        by_id.setdefault(d["transaction_id"], []).append(d)
    assert set(by_id) == {r["transaction_id"] for r in records}, "a transaction was skipped"
    assert all(all(x == group[0] for x in group) for group in by_id.values()), "a re-delivery answered differently"
    dead = _kafka_messages(kafka_bootstrap, "tx-dead-letters", 2)
    errors = sorted(d["error"] for d in dead)
    assert len(errors) == 2 and "timestamp" in errors[0] and errors[1].startswith("not a JSON object"), errors


def test_stream_urls_are_checked_with_the_form_to_use():
    assert S.parse("redis://127.0.0.1:6379/0/tx").name == "tx"
    assert S.parse("kafka://a:9092,b:9092/tx").broker == "a:9092,b:9092"
    for bad, hint in (("redis://127.0.0.1:6379/tx", "redis://HOST:6379/DB/STREAM"),
                      ("kafka://host:9092", "kafka://HOST:9092/TOPIC"), ("http://x/y", "unsupported stream")):
        with pytest.raises(S.StreamError, match=hint.replace("/", ".")):
            S.parse(bad)


def test_the_stream_demo_lands_labelled_training_data_and_the_server_picks_up_the_model_trained_on_it(
        small_data, small_run, tmp_path):
    """`make stream-demo`'s loop on the test data: stream -> decisions -> landing (labels joined after the delay)
    -> fraudctl pipeline run on the landed files -> a new version the running model server loads."""
    require_system_tool("redis-server", "redis-server")
    import pandas as pd

    from tests.helpers import SMALL_TRAIN_STEPS

    work = tmp_path / "loop"
    proc = subprocess.run([sys.executable, "scripts/stream_demo.py", "--data", str(small_data), "--model-base",
                           str(small_run.model_base), "--pipeline-root", str(small_run.root), "--work", str(work),
                           "--train-steps", str(SMALL_TRAIN_STEPS)], capture_output=True, text=True, timeout=1800,
                          cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    truth = {r[F.TRANSACTION_ID]: int(r[F.LABEL]) for r in S.csv_messages(small_data, without_labels=False)}
    landed = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                        for p in sorted((work / "landing").glob("*.csv"))])
    assert len(landed) > 0.6 * len(truth)
    assert landed[F.TRANSACTION_ID].is_unique
    # every chargeback posted before its hour landed is in the file; no legitimate row is labelled fraud
    assert {tid: int(v) for tid, v in zip(landed[F.TRANSACTION_ID], landed[F.LABEL])} == \
        {tid: truth[tid] for tid in landed[F.TRANSACTION_ID]}
    assert landed[F.LABEL].astype(int).sum() > 20
    # the hours not yet past the label delay wait in staging, none of them landed
    staged = list((work / "landing" / ".staging").glob("*.jsonl"))
    assert staged and len(landed) + sum(1 for p in staged for _ in open(p)) == len(truth)

    new = re.search(r"the model server now serves version (\d+) \(was (\d+)\)", out)
    assert new and int(new.group(1)) > int(new.group(2)), out[-3000:]
    assert (work / "serving_models" / F.MODEL_NAME / new.group(1) / "saved_model.pb").exists()
