"""Run `fraudctl serve` (`python -m fraudctl serve`) as a child process and wait until it serves.

Used by the tests and the benchmark: a separate process is what applications talk to, and it keeps the
client's threads from competing with the server for one GIL. Ports default to 0 (free ports chosen by the
OS); the real ones are read from the server's start-up log lines, which mirror TF Serving's own.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fraud import features as F
from fraud.errors import FraudError

_GRPC_LINE = re.compile(r"Running gRPC ModelServer at (\S+):(\d+) \.\.\.")
_REST_LINE = re.compile(r"Exporting HTTP/REST API at:(\S+):(\d+) \.\.\.")


class ServerStartError(FraudError):
    """The server process exited or did not start in time; the message holds the end of its log."""


@dataclass
class ServerProcess:
    process: subprocess.Popen
    host: str
    rest_port: int
    grpc_port: int
    log_path: Path

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.process.terminate()  # SIGTERM: the server stops its ports and exits 0
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_server(model_base: str | Path | None, log_path: str | Path, *, model_config_file=None,
                 monitoring_config_file=None, poll_seconds: float = 1.0, model_config_poll_seconds: float = 0.0,
                 rest_port: int = 0, grpc_port: int = 0, host: str = "127.0.0.1", extra_args=(),
                 timeout: float = 240.0) -> ServerProcess:
    args = [sys.executable, "-m", "fraudctl", "serve", "--rest-port", str(rest_port), "--grpc-port", str(grpc_port),
            "--host", host, "--poll-seconds", str(poll_seconds)]
    if model_base is not None:
        args += ["--model-base", str(model_base)]
    if model_config_file is not None:
        args += ["--model-config-file", str(model_config_file),
                 "--model-config-poll-seconds", str(model_config_poll_seconds)]
    if monitoring_config_file is not None:
        args += ["--monitoring-config-file", str(monitoring_config_file)]
    args += list(extra_args)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": F.TF_QUIET_LOG_LEVEL, **os.environ, "PYTHONUNBUFFERED": "1"}
    repo = Path(__file__).resolve().parent.parent
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=repo, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        grpc_match, rest_match = _GRPC_LINE.search(text), _REST_LINE.search(text)
        if grpc_match and rest_match:
            return ServerProcess(process, host, int(rest_match.group(2)), int(grpc_match.group(2)), log_path)
        if process.poll() is not None:
            raise ServerStartError(f"server exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.2)
    process.kill()
    raise ServerStartError(f"server did not start within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
