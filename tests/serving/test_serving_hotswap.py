"""Hot swap on the local server: versions pushed while clients keep sending requests.

A new version is pushed the way TFX's Pusher does it (files first, saved_model.pb last) while REST and gRPC
client loops run: no request may fail, and the new version must answer afterwards. Then a broken version
(garbage saved_model.pb) is pushed: it is reported in the model status and the log, and the current version
keeps serving; once the folder is rewritten with a good model it is retried and served.
"""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests

from fraud import atomic
from fraud import features as F
from serving.client_grpc import GrpcClient
from serving.client_rest import RestClient, RestClientError
from serving.example import example_transaction, typed
from serving.process import start_server
from serving.servable import read_signature_defs
from tests.serving.support import newest_version, push_version

pytestmark = pytest.mark.slow
TIMEOUT = 10


class ClientLoops:
    """REST and gRPC clients predicting in a loop; every outcome is recorded."""

    def __init__(self, rest_url: str, grpc_target: str, row: dict, threads_per_api: int = 2):
        self.rest_url, self.grpc_target, self.row = rest_url, grpc_target, row
        self.failures: list[str] = []
        self.grpc_versions: list[tuple[float, int]] = []  # (time the request was sent, version that answered)
        self.ok = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rest, daemon=True) for _ in range(threads_per_api)]
        self._threads += [threading.Thread(target=self._grpc, daemon=True) for _ in range(threads_per_api)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT + 5)

    def _rest(self):
        client = RestClient(self.rest_url, timeout=TIMEOUT)
        row = self.row
        while not self._stop.is_set():
            try:
                assert len(client.predict([row])) == 1
                with self._lock:
                    self.ok += 1
            except (RestClientError, requests.RequestException, AssertionError) as exc:
                with self._lock:
                    self.failures.append(f"REST: {exc}")

    def _grpc(self):
        client = GrpcClient(self.grpc_target, timeout=TIMEOUT)
        row = self.row
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                scores, version = client.predict([row])
                with self._lock:
                    self.ok += 1
                    self.grpc_versions.append((sent, version))
            except grpc.RpcError as exc:
                with self._lock:
                    self.failures.append(f"gRPC: {exc.code().name}: {exc.details()}")
        client.close()

    def latest_version(self) -> int | None:
        with self._lock:
            return self.grpc_versions[-1][1] if self.grpc_versions else None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def statuses(rest_url: str) -> dict[int, dict]:
    document = requests.get(f"{rest_url}/v1/models/{F.MODEL_NAME}", timeout=TIMEOUT).json()
    return {int(s["version"]): s for s in document["model_version_status"]}


def test_push_while_serving_then_broken_version(small_run, tmp_path):
    source = newest_version(small_run.model_base)
    base = tmp_path / "models" / F.MODEL_NAME
    base.mkdir(parents=True)
    first = int(source.name)
    push_version(source, base, first)
    row = typed(example_transaction(sorted(read_signature_defs(source)[F.SERVING_SIGNATURE].inputs)))
    server = start_server(base, tmp_path / "server.log", poll_seconds=0.2)
    try:
        with ClientLoops(server.rest_url, server.grpc_target, row) as loops:
            wait_for(lambda: loops.latest_version() == first, 30, "the first version to answer")
            time.sleep(1.0)

            # 1. A new version arrives while requests are flowing.
            second = first + 1
            (base / "incomplete").mkdir()  # not a number: never a version
            half = base / str(second + 50)
            shutil.copytree(source / "variables", half / "variables")  # no saved_model.pb yet: not a version
            push_version(source, base, second)
            swapped_at = wait_for(lambda: loops.latest_version() == second and time.monotonic(), 60,
                                  "the pushed version to answer")
            time.sleep(1.0)
            after_swap = [v for t, v in loops.grpc_versions if t > swapped_at]
            assert after_swap and set(after_swap) == {second}, "requests after the swap went to an old version"
            state = statuses(server.rest_url)
            assert state[second]["state"] == "AVAILABLE" and state[first]["state"] == "END"
            assert second + 50 not in state

            # 2. A broken version: reported, and the current one keeps serving.
            broken = second + 1
            (base / str(broken)).mkdir()
            (base / str(broken) / "saved_model.pb").write_bytes(b"this is not a SavedModel")
            report = wait_for(lambda: statuses(server.rest_url).get(broken, {}).get("status", {})
                              .get("error_message"), 30, "the broken version to be reported")
            assert statuses(server.rest_url)[broken]["state"] == "END"
            assert str(broken) in report and "failed" in report
            time.sleep(1.0)
            assert loops.latest_version() == second
            assert statuses(server.rest_url)[second]["state"] == "AVAILABLE"

            # 3. The folder is rewritten with a good model: it is retried and served.
            shutil.rmtree(base / str(broken))
            push_version(source, base, broken)
            wait_for(lambda: loops.latest_version() == broken, 60, "the repaired version to answer")
            time.sleep(0.5)

            # 4. The Pusher's atomic publish, killed at every file or out of disk space: the server never sees
            # a version to load, the clients see nothing; the next complete publish is served.
            killed = broken + 1
            for k in range(sum(1 for p in source.rglob("*") if p.is_file())):
                child = subprocess.run([sys.executable, "-c", _KILLED_PUSH, source, base / str(killed), str(k)],
                                       cwd=REPO, timeout=60)
                assert child.returncode == 9 and not (base / str(killed)).exists()
                with pytest.raises(OSError):
                    atomic.publish_tree(source, base / str(killed), copy_file=_full_disk_at(k))
            time.sleep(1.0)  # several polls
            assert killed not in statuses(server.rest_url) and loops.latest_version() == broken
            atomic.remove_stale_staging(base, older_than_s=0)
            atomic.publish_tree(source, base / str(killed))
            wait_for(lambda: loops.latest_version() == killed, 60, "the published version to answer")
        assert loops.failures == [], loops.failures[:5]
        assert loops.ok > 50
        log = server.log()
        assert f"Loading servable {{name: {F.MODEL_NAME} version: {broken}}} failed" in log
        assert "still serving version(s)" in log
        assert f"version: {killed}}} failed" not in log  # no half-published version was ever tried
        assert server.alive()
    finally:
        server.stop()


# A process publishing a version that is killed (no clean-up can run) when it reaches file number argv[3].
_KILLED_PUSH = """
import os, shutil, sys
from fraud import atomic
calls = []
def copy(src, dst):
    calls.append(src)
    if len(calls) > int(sys.argv[3]):
        os._exit(9)
    shutil.copy2(src, dst)
atomic.publish_tree(sys.argv[1], sys.argv[2], copy_file=copy)
"""
REPO = Path(__file__).resolve().parents[2]


def _full_disk_at(k: int):
    calls = []

    def copy(src, dst):
        calls.append(src)
        if len(calls) > k:
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copy2(src, dst)
    return copy


def _reload(grpc_target: str, models: dict[str, str]):
    """HandleReloadConfigRequest with {name: base path}; returns the response's status."""
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        config.model_config_list.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
    with grpc.insecure_channel(grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        return stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                              timeout=60).status


def test_reload_config_is_off_by_default_and_confined_to_the_model_root_when_on(small_run, tmp_path):
    """Nobody can make the server load a SavedModel from elsewhere, or unload the served one, over gRPC: refused
    by default; with --enable-reload-config only base paths inside the model root (links resolved) are taken."""
    source = newest_version(small_run.model_base)
    root = tmp_path / "models"
    base, other = root / F.MODEL_NAME, root / "fraud_detector_b"
    push_version(source, base, int(source.name))
    push_version(source, other, int(source.name))
    outside = tmp_path / "elsewhere" / "evil"
    push_version(source, outside, 1)
    (root / "link").symlink_to(outside)  # inside the root by name only
    row = typed(example_transaction(sorted(read_signature_defs(source)[F.SERVING_SIGNATURE].inputs)))

    server = start_server(base, tmp_path / "off.log")
    try:
        status = _reload(server.grpc_target, {"evil": outside})
        assert status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0], status
        assert "disabled" in status.error_message and "--enable-reload-config" in status.error_message
        assert RestClient(server.rest_url, timeout=TIMEOUT).predict([row])  # still serving what it served
    finally:
        server.stop()

    server = start_server(base, tmp_path / "on.log", extra_args=["--enable-reload-config"])
    try:
        for path in (outside, root / "link"):
            status = _reload(server.grpc_target, {"evil": path})
            assert status.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (path, status)
            assert "outside the allowed model roots" in status.error_message, status.error_message
        assert requests.get(f"{server.rest_url}/v1/models/evil", timeout=TIMEOUT).status_code == 404
        status = _reload(server.grpc_target, {F.MODEL_NAME: base, "fraud_detector_b": other})
        assert status.error_code == 0, status
        assert RestClient(server.rest_url, timeout=TIMEOUT, model_name="fraud_detector_b").predict([row])
    finally:
        server.stop()
