"""Serving benchmark: REST and gRPC against the same SavedModel signature called in-process, in one run.

    .venv/bin/python bench/serving_bench.py --model-base runs/demo/serving_models/fraud_detector

Measures, for one transaction per request (the card-authorisation case):
- single-request latency p50 / p99 (sequential calls) for in-process, REST and gRPC;
- throughput (requests/s) and p99 latency with 1, 8, 32 and 64 concurrent clients;
each also as a ratio to in-process, with server-side batching off and on (serving/batching.config) in one run,
and the CPU time per request of the clients' process and of the server's. The server runs as its own process
(`python -m fraudctl serve`) on the
same machine as the clients, so on a small machine clients and server compete for the same cores: read the
figures as "what the serving layer costs here", not as capacity planning. Results are printed as a table and,
with --json, written as JSON (bench/results/ is git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from the repo root
MONITORING_CONFIG = REPO / "serving" / "monitoring.config"
BATCHING_CONFIG = REPO / "serving" / "batching.config"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fraud import features as F  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latencies(call, n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(make_call, clients: int, seconds: float, server_pid: int | None = None):
    """(requests per second, every request's latency in ms, CPU ms per request of the clients' process and of the
    server's, or None without `server_pid`) with `clients` threads, each with its own client (connection)."""
    calls = [make_call() for _ in range(clients)]
    for call in calls:
        call()
    counts = [0] * clients
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(i: int):
        start.wait()
        try:
            while not stop.is_set():
                began = time.perf_counter()
                calls[i]()
                lat[i].append((time.perf_counter() - began) * 1000)
                counts[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    pids = (os.getpid(), server_pid) if server_pid else ()
    cpu_before = [cpu_seconds(pid) for pid in pids]
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    elapsed = time.perf_counter() - began
    cpu_after = [cpu_seconds(pid) for pid in pids]
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    done = sum(counts)
    cpu = (dict(zip(("client", "server"), (1000 * (b - a) / max(1, done) for a, b in zip(cpu_before, cpu_after))))
           if pids else None)
    return done / elapsed, [x for per in lat for x in per], cpu


def server_side_means(exposition: str) -> dict:
    """Mean server-side time per request (request_latency, by entrypoint) and in the model
    (runtime_latency), in microseconds, from the server's own metrics over the whole run."""
    import re

    sums: dict = {}
    for line in exposition.splitlines():
        match = re.match(r":tensorflow:serving:(request|runtime)_latency_(sum|count)\{(.*)\} (\S+)$", line)
        if not match:
            continue
        kind, field, labels, value = match.groups()
        where = re.search(r'entrypoint="([^"]*)"', labels) if kind == "request" else None
        key = f"request {where.group(1)}" if where else "model runtime (REST+gRPC)"
        sums.setdefault(key, {"sum": 0.0, "count": 0.0})[field] += float(value)
    return {k: v["sum"] / v["count"] for k, v in sums.items() if v["count"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", required=True, type=Path,
                        help=f"model base dir (<serving-dir>/{F.MODEL_NAME}) or a serving dir")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per latency measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput measurement")
    parser.add_argument("--clients", default="1,8,32,64", help="concurrency levels")
    parser.add_argument("--batching", default="off,on",
                        help="server runs: 'off' (no batching), 'on' (--enable-batching with serving/batching.config)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import grpc
    import requests
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.client_grpc import GrpcClient
    from serving.example import example_transaction, typed
    from serving.process import start_server
    from serving.server import resolve_model_base
    from serving.config import parse_monitoring_config, prometheus_path
    from fraud.scoring import resolve_version_dir

    base = resolve_model_base(args.model_base, F.MODEL_NAME)
    version_dir = resolve_version_dir(base)
    signature = tf.saved_model.load(str(version_dir)).signatures[F.SERVING_SIGNATURE]
    inputs = sorted(signature.structured_input_signature[1])
    row = typed(example_transaction(inputs))
    from serving.client_grpc import input_arrays

    tensors = {k: tf.constant(v) for k, v in input_arrays([row]).items()}

    def in_process():
        return signature(**tensors)[F.SCORE_OUTPUT].numpy()

    body = json.dumps({"signature_name": F.SERVING_SIGNATURE, "instances": [row]})
    request_proto = GrpcClient("127.0.0.1:1").predict_request([row])
    clients_levels = [int(c) for c in args.clients.split(",")]
    results = {"model_version": int(version_dir.name), "cpus": os.cpu_count(), "requests": args.requests,
               "seconds": args.seconds, "batching_config": str(BATCHING_CONFIG), "in-process": {}, "modes": {}}
    values = latencies(in_process, args.requests)
    results["in-process"]["latency_ms"] = {"p50": percentile(values, 50), "p99": percentile(values, 99),
                                           "mean": statistics.fmean(values)}
    results["in-process"]["throughput_rps"] = {str(c): throughput(lambda: in_process, c, args.seconds)[0]
                                               for c in clients_levels}
    log_dir = Path(tempfile.mkdtemp(prefix="serving_bench_"))
    for mode in args.batching.split(","):
        extra = ["--enable-batching", "--batching-parameters-file", str(BATCHING_CONFIG)] if mode == "on" else []
        server = start_server(base, log_dir / f"server-{mode}.log", monitoring_config_file=MONITORING_CONFIG,
                              extra_args=extra)
        url = f"{server.rest_url}/v1/models/{F.MODEL_NAME}:predict"

        def make_rest(url=url):
            session = requests.Session()

            def call():
                response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
                if response.status_code != 200:
                    raise RuntimeError(response.text)
            return call

        def make_grpc(target=server.grpc_target):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
            return lambda: stub.Predict(request_proto, timeout=30)

        out = results["modes"][mode] = {"latency_ms": {}, "throughput_rps": {}, "cpu_ms_per_request": {}}
        try:
            for name, call in (("REST", make_rest()), ("gRPC", make_grpc())):
                values = latencies(call, args.requests)
                out["latency_ms"][name] = {"p50": percentile(values, 50), "p99": percentile(values, 99),
                                           "mean": statistics.fmean(values)}
            for clients in clients_levels:
                out["throughput_rps"][str(clients)] = {}
                out["latency_ms"][f"{clients} clients"] = {}
                out["cpu_ms_per_request"][str(clients)] = {}
                for name, make in (("REST", make_rest), ("gRPC", make_grpc)):
                    rate, lat, cpu = throughput(make, clients, args.seconds, server_pid=server.process.pid)
                    out["throughput_rps"][str(clients)][name] = rate
                    out["cpu_ms_per_request"][str(clients)][name] = cpu
                    out["latency_ms"][f"{clients} clients"][name] = {"p50": percentile(lat, 50),
                                                                      "p99": percentile(lat, 99)}
            metrics_path = prometheus_path(parse_monitoring_config(MONITORING_CONFIG))
            out["server_side_us"] = server_side_means(requests.get(server.rest_url + metrics_path, timeout=30).text)
        finally:
            server.stop()

    ref = results["in-process"]
    print(f"\nServing benchmark: {F.MODEL_NAME} version {results['model_version']}, one transaction per request, "
          f"{results['cpus']} CPUs (clients and server on the same machine)\n")
    print(f"in-process signature call: p50 {ref['latency_ms']['p50']:.2f} ms, p99 {ref['latency_ms']['p99']:.2f} ms; "
          + ", ".join(f"{c} threads {r:.0f} calls/s" for c, r in ref["throughput_rps"].items()))
    for mode, out in results["modes"].items():
        lat = out["latency_ms"]
        print(f"\nbatching {mode}")
        print(f"  {'single request':<18}{'p50 ms':>9}{'p99 ms':>9}{'p50 x in-proc':>15}")
        for name in ("REST", "gRPC"):
            print(f"  {name:<18}{lat[name]['p50']:>9.2f}{lat[name]['p99']:>9.2f}"
                  f"{lat[name]['p50'] / ref['latency_ms']['p50']:>15.2f}")
        print(f"  {'clients':<10}{'REST req/s':>12}{'gRPC req/s':>12}{'REST/in-proc':>14}{'gRPC/in-proc':>14}"
              f"{'REST p99 ms':>13}{'gRPC p99 ms':>13}{'server CPU ms/req REST|gRPC':>30}")
        for clients, row_ in out["throughput_rps"].items():
            base_rate = ref["throughput_rps"][clients]
            p99 = lat[f"{clients} clients"]
            cpu = out["cpu_ms_per_request"][clients]
            print(f"  {clients:<10}{row_['REST']:>12.0f}{row_['gRPC']:>12.0f}{row_['REST'] / base_rate:>14.2f}"
                  f"{row_['gRPC'] / base_rate:>14.2f}{p99['REST']['p99']:>13.1f}{p99['gRPC']['p99']:>13.1f}"
                  f"{cpu['REST']['server']:>21.2f} | {cpu['gRPC']['server']:.2f}")
        print("  server-side mean per request (its own metrics): " + ", ".join(
            f"{k} {v / 1000:.2f} ms" for k, v in sorted(out["server_side_us"].items())))
    print(f"load average during the run (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
