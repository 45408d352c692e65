"""Decisions through a Redis stream against a direct HTTP call, in one run on this machine.

    .venv/bin/python bench/stream_bench.py [--data runs/demo/data] [--model-base runs/demo/serving_models/fraud_detector]
        [--transactions 6000] [--rate 250] [--batch 100]

Started here: a private redis-server, the local model server on --model-base, `fraudctl decide consume` (Redis
state), and `fraudctl decide serve` (the same options, its own Redis database) for the HTTP reference.

Printed:
1. sustained: the stream pre-filled with --transactions, the time until every one is in the decisions stream
   (decisions/s);
2. paced: --rate transactions/s sent one by one for --seconds; the latency from each XADD to its decision being
   readable (XREAD on the decisions stream), p50 / p99;
3. HTTP: the same transactions POSTed to /v1/decisions one at a time (latency p50 / p99), and by 16 concurrent
   clients (decisions/s).
Target (issue): >= 500 decisions/s sustained, p99 < 50 ms from event to decision.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402

from decision import stream as S  # noqa: E402
from fraud import features as F  # noqa: E402
from stream_demo import FRAUDCTL, free_port, start, stop_all, wait_port  # noqa: E402


def percentiles(values) -> str:
    a = np.asarray(values) * 1000
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms (n={len(a):,})"


def relabel(records, suffix):
    """The same transactions as new ones of new cards, devices and restaurants: each phase is a stream in time
    order of its own (replaying the same event times on the same restaurant would make every event late)."""
    ids = (F.TRANSACTION_ID, F.USER_ID, F.DEVICE_ID, F.RESTAURANT_ID)
    return [{**r, **{k: f"{r[k]}-{suffix}" for k in ids if r.get(k)}} for r in records]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "runs/demo/data")
    parser.add_argument("--model-base", type=Path, default=REPO / "runs/demo/serving_models" / F.MODEL_NAME)
    parser.add_argument("--transactions", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=250.0, help="paced phase: transactions per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced phase: how long")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--work", type=Path, default=REPO / "runs/stream-bench")
    args = parser.parse_args()

    import redis
    import requests

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed (make system-deps)", file=sys.stderr)
        return 2
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "logs").mkdir(parents=True)
    records = S.csv_messages(args.data)
    base = records[-args.transactions:]
    children = []
    try:
        port = free_port()
        proc, _ = start([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(args.work),
                         "--appendonly", "yes", "--save", ""], args.work / "logs/redis.log")
        children.append(proc)
        wait_port(port)
        url = f"redis://127.0.0.1:{port}"
        server, found = start([*FRAUDCTL, "serve", "--model-base", str(args.model_base), "--rest-port", "0",
                               "--grpc-port", "0"], args.work / "logs/server.log",
                              r"Running gRPC ModelServer at \S+:(\d+)")
        children.append(server)
        serving = f"grpc://127.0.0.1:{found.group(1)}"
        common = ["--serving", serving, "--model-dir", str(args.model_base), "--deadline-ms", "2000"]
        consumer, _ = start([*FRAUDCTL, "decide", "consume", "--source", f"{url}/0/tx", "--decisions",
                             f"{url}/0/decisions", "--state", f"{url}/0", "--batch", str(args.batch), *common],
                            args.work / "logs/consumer.log", r"Consuming")
        children.append(consumer)
        http, found = start([*FRAUDCTL, "decide", "serve", "--state", f"{url}/1", "--port", "0", *common],
                            args.work / "logs/decide.log", r"Deciding at (http://\S+)/v1/decisions")
        children.append(http)
        decisions_url = found.group(1) + "/v1/decisions"
        client = redis.Redis.from_url(f"{url}/0", decode_responses=True)

        # warm-up: the model's first calls, both paths
        warm = relabel(base[:200], "warm")
        asyncio.run(S.redis_publish(f"{url}/0/tx", warm))
        while client.xlen("decisions") < len(warm):
            time.sleep(0.05)
        for r in relabel(base[:50], "warmhttp"):
            requests.post(decisions_url, json=r, timeout=10).raise_for_status()

        # 1. sustained
        batch = relabel(base, "sustained")
        before = client.xlen("decisions")
        asyncio.run(S.redis_publish(f"{url}/0/tx", batch))
        began = time.perf_counter()
        while client.xlen("decisions") < before + len(batch):
            time.sleep(0.01)
        sustained = len(batch) / (time.perf_counter() - began)
        print(f"stream, sustained: {len(batch):,} transactions decided in {len(batch) / sustained:.1f} s = "
              f"{sustained:,.0f} decisions/s", flush=True)

        # 2. paced: XADD -> decision readable
        paced = relabel(base, "paced")[: int(args.rate * args.seconds)]
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        last = client.xinfo_stream("decisions")["last-generated-id"]

        def reader():
            nonlocal last
            own = redis.Redis.from_url(f"{url}/0", decode_responses=True)
            while len(seen) < len(paced):
                for _, entries in own.xread({"decisions": last}, count=1000, block=1000) or []:
                    now = time.perf_counter()
                    for entry_id, fields in entries:
                        last = entry_id
                        seen.setdefault(fields["transaction_id"], now)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        period = 1.0 / args.rate
        start_t = time.perf_counter()
        for i, r in enumerate(paced):
            due = start_t + i * period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[r[F.TRANSACTION_ID]] = time.perf_counter()
            client.xadd("tx", S.encode_fields(r))
        thread.join(120)
        latencies = [seen[t] - sent[t] for t in sent if t in seen]
        print(f"stream, paced at {args.rate:.0f}/s for {args.seconds:.0f} s: XADD -> decision readable "
              f"{percentiles(latencies)}; over 50 ms: {np.mean(np.asarray(latencies) > 0.05):.1%}", flush=True)
        timeline = sorted((sent[t] - start_t, seen[t] - sent[t]) for t in sent if t in seen)
        (args.work / "paced_latency.json").write_text(json.dumps(timeline))  # (seconds into the phase, latency)

        # 3. HTTP, one at a time and 16 at once
        one = relabel(base[:1500], "http1")
        times = []
        with requests.Session() as session:
            for r in one:
                t0 = time.perf_counter()
                session.post(decisions_url, json=r, timeout=10).raise_for_status()
                times.append(time.perf_counter() - t0)
        print(f"HTTP, one client: {percentiles(times)}, {len(one) / sum(times):,.0f} decisions/s", flush=True)

        async def concurrent(rows, clients=16):
            import aiohttp

            queue = list(rows)
            async with aiohttp.ClientSession() as session:
                async def worker():
                    while queue:
                        r = queue.pop()
                        async with session.post(decisions_url, data=json.dumps(r),
                                                headers={"Content-Type": "application/json"}) as resp:
                            assert resp.status == 200, await resp.text()
                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(clients)))
                return time.perf_counter() - t0
        many = relabel(base, "http16")
        took = asyncio.run(concurrent(many))
        http_rate = len(many) / took
        print(f"HTTP, 16 clients: {len(many):,} decisions in {took:.1f} s = {http_rate:,.0f} decisions/s", flush=True)
        print(f"ratio stream sustained / HTTP 16 clients: {sustained / http_rate:.2f}")
        return 0
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
