"""Decision service benchmark: POST /v1/decisions against a direct gRPC Predict of the same rows, in one run.

    .venv/bin/python bench/decisions_bench.py --model-base runs/demo/serving_models/fraud_detector [--json F]

Starts the local model server and the decision service (`fraudctl decide serve`) as their own processes, then,
for the embedded store and (when Debian's redis-server is installed) Redis:
- latency p50 / p99 and throughput with 1, 8 and 32 concurrent clients, each client sending its own cards'
  transactions in time order;
- the same rows as a direct gRPC Predict (the features precomputed), the reference: "added" = decision - direct;
- state memory per 100,000 cards (Redis: used_memory over the user keys; embedded: the JSON snapshots).
Clients and servers share this machine's cores: read the ratios, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fraud import features as F  # noqa: E402

RAW = ("transaction_id", "timestamp", "amount", "currency", "user_id", "restaurant_id", "city", "device_id",
       "payment_method", "transaction_type", "home_city", "user_age", "user_gender", "device_type", "os_version")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_decisions(serving_target: str, model_base: Path, state: str, log: Path):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "fraudctl"), "decide", "serve", "--serving",
                             f"grpc://{serving_target}", "--model-dir", str(model_base), "--state", state,
                             "--port", str(port), "--deadline-ms", "2000"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the decision service exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the decision service did not start")


def run_clients(per_client: list[list], call, seconds_cap: float = 60.0):
    """Each client sends its own list in order; returns (requests/s, latencies ms)."""
    lat: list[list[float]] = [[] for _ in per_client]
    errors = []

    def work(i):
        try:
            for item in per_client[i]:
                began = time.perf_counter()
                call(i, item)
                lat[i].append((time.perf_counter() - began) * 1000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(per_client))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds_cap)
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    flat = [x for per in lat for x in per]
    return len(flat) / elapsed, flat


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", required=True, type=Path)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--per-client", type=int, default=60, help="transactions each client sends")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import grpc
    import requests
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from decision.service import model_request, standardise
    from fraud import behaviour as B
    from fraud import ingest
    from fraud.synth import datagen
    from serving.process import start_server

    work = Path(tempfile.mkdtemp(prefix="decisions_bench_"))
    levels = [int(c) for c in args.clients.split(",")]
    datagen.generate(work / "data", days=20, users=max(max(levels) * 40, 100), seed=3)
    raw = ingest.read_csv_dir(work / "data")
    standard = ingest.standardise(raw, require_label=True).frame
    raw = ingest.raw_in_time_order(raw, standard)
    offline = B.compute_offline(B.events_from_frame(standard))
    columns = [c for c in RAW if c in raw.columns]
    transactions = raw[columns].to_dict("records")
    client_of_user = {user: i for i, user in enumerate(sorted({tx["user_id"] for tx in transactions}))}

    server = start_server(args.model_base, work / "server.log")
    base = args.model_base
    from fraud.export import read_signature_defs
    from fraud.scoring import resolve_version_dir

    names = sorted(read_signature_defs(resolve_version_dir(base))[F.SERVING_SIGNATURE].inputs)
    results = {"cpus": os.cpu_count(), "per_client": args.per_client, "stores": {}}
    stores = ["memory://"]
    redis_proc = None
    if shutil.which("redis-server"):
        port = free_port()
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--dir", str(work), "--appendonly",
                                       "yes", "--save", ""], stdout=subprocess.DEVNULL)
        stores.append(f"redis://127.0.0.1:{port}/0")
        import redis

        for _ in range(100):  # until it answers
            try:
                empty_redis_bytes = redis.Redis(port=port).info("memory")["used_memory"]  # Redis' own baseline
                break
            except redis.ConnectionError:
                time.sleep(0.1)
    try:
        for state in stores:
            kind = "redis" if state.startswith("redis") else "embedded"
            out = results["stores"][kind] = {}
            proc, url = start_decisions(server.grpc_target, base, state, work / f"decide-{kind}.log")
            try:
                for clients in levels:
                    # Client i sends the transactions of its own cards (users i, i+clients, ...), in time order.
                    mine = [[] for _ in range(clients)]
                    for tx in transactions:
                        k = client_of_user[tx["user_id"]] % clients
                        if len(mine[k]) < args.per_client:
                            mine[k].append(tx)
                    sessions = [requests.Session() for _ in range(clients)]
                    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(
                        grpc.insecure_channel(server.grpc_target)) for _ in range(clients)]
                    suffix = f"-{kind}-{clients}"

                    def decide(i, tx, suffix=suffix, sessions=sessions):
                        response = sessions[i].post(f"{url}/v1/decisions",
                                                    json={**tx, "transaction_id": tx["transaction_id"] + suffix},
                                                    timeout=30)
                        if response.status_code != 200:
                            raise RuntimeError(response.text)

                    requests_by_client = [[model_request(standardise(tx)[0], offline[tx["transaction_id"]], names,
                                                         F.MODEL_NAME) for tx in txs] for txs in mine]

                    def direct(i, request, stubs=stubs):
                        stubs[i].Predict(request, timeout=30)

                    direct_rate, direct_lat = run_clients(requests_by_client, direct)
                    rate, lat = run_clients(mine, decide)
                    out[str(clients)] = {
                        "decision": {"rps": rate, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)},
                        "direct_predict": {"rps": direct_rate, "p50_ms": percentile(direct_lat, 50),
                                           "p99_ms": percentile(direct_lat, 99)},
                        "added_p50_ms": percentile(lat, 50) - percentile(direct_lat, 50)}
                    print(f"{kind:9s} {clients:3d} clients: decision p50 {percentile(lat, 50):6.2f} ms "
                          f"p99 {percentile(lat, 99):6.2f} ms {rate:6.0f}/s | direct Predict p50 "
                          f"{percentile(direct_lat, 50):5.2f} ms p99 {percentile(direct_lat, 99):5.2f} ms | "
                          f"added p50 {percentile(lat, 50) - percentile(direct_lat, 50):5.2f} ms", flush=True)
                if kind == "redis":
                    client = redis.Redis.from_url(state)
                    cards = sum(1 for _ in client.scan_iter("fraud:user:*"))
                    used = client.info("memory")["used_memory"] - empty_redis_bytes
                    out["bytes_per_100k_cards"] = used / max(cards, 1) * 100_000
                    print(f"redis: {cards} cards, {used / 1e6:.1f} MB above an empty Redis -> "
                          f"{out['bytes_per_100k_cards'] / 1e6:.0f} MB per 100,000 cards (with their devices, "
                          "restaurants and decision records)")
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        server.stop()
        if redis_proc is not None:
            redis_proc.terminate()
    print(f"load average (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"written to {args.json}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
