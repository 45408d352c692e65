"""Real servers some tests start for themselves (scripts/local_servers.py): Redis and PostgreSQL, on free ports in
temporary folders. A missing server skips the test with the reason, or fails it under CI (require_system_tool)."""
from __future__ import annotations

import contextlib
import sys

import pytest

from tests.helpers import REPO, require_system_tool

sys.path.insert(0, str(REPO / "scripts"))
import local_servers  # noqa: E402

free_port = local_servers.free_port


class RedisServer(local_servers.RedisServer):
    def __init__(self, workdir):
        super().__init__(workdir, require=require_system_tool)


@contextlib.contextmanager
def postgres_server():
    try:
        with local_servers.postgres_server(require=require_system_tool) as url:
            yield url
    except RuntimeError as exc:
        if "could not start PostgreSQL" in str(exc):
            pytest.fail(str(exc))
        raise
