"""The streaming loop end to end, on this machine (what `make stream-demo` runs):

    transactions -> Redis stream -> fraudctl decide consume -> decisions / alerts / dead letters
                                            |            \\-> landing/ (hourly CSV files, labelled after the delay)
    chargebacks -> POST /v1/labels (fraudctl decide serve, the same Redis state)
    landing/ -> fraudctl pipeline run -> a new version in the serving dir -> the model server serves it

    .venv/bin/python scripts/stream_demo.py --data runs/demo/data --model-base runs/demo/serving_models/fraud_detector \\
        --pipeline-root runs/demo/pipeline --work runs/stream-demo

It starts its own redis-server (Debian's redis-server package; `make system-deps` installs it), a local model server
on a copy of --model-base, the decision service (for the labels) and the consumer, then sends --data's
transactions in time order without their labels, posts each fraudulent one's chargeback once it is decided (the
data's own labels stand in for the card network), and trains on what landed. Everything it starts is stopped at
the end; --work keeps the logs, the landed files and the new pipeline run.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from local_servers import free_port  # scripts/ is on the path (python scripts/stream_demo.py, or inserted)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from decision import stream as S  # noqa: E402
from fraud import features as F  # noqa: E402

FRAUDCTL = [sys.executable, "-m", "fraudctl"]




def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def start(args: list[str], log: Path, wait_line: str | None = None, timeout: float = 120) -> tuple:
    """A child process logging to `log`; with `wait_line`, wait for a line matching it (returns the match)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO)
    if wait_line is None:
        return proc, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(wait_line, log.read_text())
        if found:
            return proc, found
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(args[:5])} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit(f"{' '.join(args[:5])} did not start in {timeout:.0f} s; see {log}")


def stop_all(children: list) -> None:
    """Stop the started processes, the last started first (SIGTERM, then SIGKILL after 15 s)."""
    for proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def newest_version(base: Path) -> int:
    return max(int(p.name) for p in base.iterdir() if p.name.isdigit())


def served_versions(rest_url: str) -> set[int]:
    with urllib.request.urlopen(f"{rest_url}/v1/models/{F.MODEL_NAME}", timeout=5) as r:
        status = json.load(r)["model_version_status"]
    return {int(s["version"]) for s in status if s["state"] == "AVAILABLE"}


def post_label(url: str, transaction_id: str, label: int) -> None:
    body = json.dumps({"transaction_id": transaction_id, F.LABEL: label}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        r.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="transactions with labels (CSV folder)")
    parser.add_argument("--model-base", type=Path, required=True, help=f"<serving-dir>/{F.MODEL_NAME} to start from")
    parser.add_argument("--pipeline-root", type=Path, help="its pipeline root: training statistics for the drift "
                                                            "gauges")
    parser.add_argument("--work", type=Path, required=True, help="logs, landing, the new run (emptied first)")
    parser.add_argument("--train-steps", type=int, default=None, help="passed to fraudctl pipeline run")
    args = parser.parse_args(argv)

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed: run `sudo make system-deps` (Debian's redis-server), then again",
              file=sys.stderr)
        return 2
    if args.work.exists():
        shutil.rmtree(args.work)
    work = args.work.resolve()
    (work / "logs").mkdir(parents=True)
    serving_dir = work / "serving_models"
    base = serving_dir / F.MODEL_NAME
    shutil.copytree(args.model_base, base)
    first_version = newest_version(base)
    children = []
    began = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", flush=True)

    try:
        port = free_port()
        redis_proc, _ = start([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work),
                               "--appendonly", "yes", "--save", ""], work / "logs" / "redis.log")
        children.append(redis_proc)
        wait_port(port)
        redis_url = f"redis://127.0.0.1:{port}/0"
        step(f"Redis at {redis_url} (AOF on)")

        server, found = start([*FRAUDCTL, "serve", "--model-base", str(base), "--rest-port", "0", "--grpc-port", "0",
                               "--poll-seconds", "1"], work / "logs" / "model_server.log",
                              r"Exporting HTTP/REST API at:(\S+):(\d+) \.\.\.")
        children.append(server)
        rest_url = f"http://127.0.0.1:{found.group(2)}"
        grpc_port = re.search(r"Running gRPC ModelServer at \S+:(\d+)",
                              (work / "logs" / "model_server.log").read_text()).group(1)
        serving = f"grpc://127.0.0.1:{grpc_port}"
        step(f"model server: version {first_version} at {rest_url} and {serving}")

        common = ["--serving", serving, "--state", redis_url, "--model-dir", str(base), "--deadline-ms", "2000"]
        service, found = start([*FRAUDCTL, "decide", "serve", *common, "--port", "0"], work / "logs" / "decide.log",
                               r"Deciding at (http://\S+)/v1/decisions")
        children.append(service)
        labels_url = found.group(1) + "/v1/labels"

        stats = ["--training-stats", str(args.pipeline_root)] if args.pipeline_root else []
        metrics_port = free_port()
        consumer, _ = start([*FRAUDCTL, "decide", "consume", "--source", f"{redis_url}/transactions",
                             "--decisions", f"{redis_url}/decisions", "--alerts", f"{redis_url}/alerts",
                             "--landing", str(work / "landing"), "--metrics-port", str(metrics_port),
                             "--idle-exit-seconds", "5", *stats, *common], work / "logs" / "consumer.log",
                            r"Consuming")
        children.append(consumer)
        step(f"consumer running (metrics http://127.0.0.1:{metrics_port}/metrics); labels go to {labels_url}")

        truth = {r[F.TRANSACTION_ID]: int(r[F.LABEL]) for r in S.csv_messages(args.data, without_labels=False)}
        n = S.publish_csv(args.data, f"{redis_url}/transactions")
        step(f"published {n:,} transactions (no labels) to the stream 'transactions'")

        import redis

        client = redis.Redis.from_url(redis_url, decode_responses=True)
        last_id, decided, posted, last_print = "0-0", 0, 0, time.monotonic()
        while True:  # the card network: a chargeback for each fraudulent transaction once it is decided
            entries = client.xread({"decisions": last_id}, count=1000, block=500)
            for _, batch in entries:
                for entry_id, fields in batch:
                    last_id = entry_id
                    decided += 1
                    if truth.get(fields["transaction_id"]) == 1:
                        post_label(labels_url, fields["transaction_id"], 1)
                        posted += 1
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                step(f"  {decided:,} decided, {posted:,} chargebacks posted")
            if not entries and consumer.poll() is not None:
                break
        if consumer.returncode != 0:
            raise SystemExit(f"the consumer failed:\n{(work / 'logs' / 'consumer.log').read_text()[-2000:]}")
        alerts = client.xlen("alerts")
        dead = client.xlen("transactions-dead-letters")
        landed = sorted((work / "landing").glob("*.csv"))
        rows = sum(max(0, sum(1 for _ in open(p)) - 1) for p in landed)
        step(f"decided {decided:,} ({alerts:,} alerts, {dead:,} dead letters); {posted:,} chargebacks posted; "
             f"landed {len(landed)} hourly files, {rows:,} rows (the last {F.LABEL_DELAY_DAYS} days wait for their "
             "labels)")
        print((work / "logs" / "consumer.log").read_text().strip().splitlines()[-1], flush=True)

        step("training on the landed files: fraudctl pipeline run --data " + str(work / "landing"))
        extra = ["--train-steps", str(args.train_steps)] if args.train_steps else []
        run = subprocess.run([*FRAUDCTL, "pipeline", "run", "--data", str(work / "landing"), "--root",
                              str(work / "pipeline"), "--serving-dir", str(serving_dir), *extra], cwd=REPO)
        if run.returncode != 0:
            step(f"the pipeline ended with exit {run.returncode}: no new version (see above)")
            return run.returncode
        new_version = newest_version(base)
        deadline = time.monotonic() + 120
        while new_version not in served_versions(rest_url) and time.monotonic() < deadline:
            time.sleep(0.5)
        if new_version not in served_versions(rest_url):
            step(f"version {new_version} was pushed but the server did not load it in 120 s")
            return 1
        step(f"the model server now serves version {new_version} (was {first_version}), trained on the stream")
        return 0
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
