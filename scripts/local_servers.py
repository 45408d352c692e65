"""Real servers started for a test or a benchmark, on free ports in temporary folders: Redis and PostgreSQL
(Debian's redis-server and postgresql). tests/servers.py wraps them for pytest (a missing server skips the test, or
fails it under CI); bench/ scripts use them as they are (a missing server is an error that says what to install)."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def require_tool(path_or_name: str, package: str) -> str:
    found = shutil.which(path_or_name)
    if found is None:
        raise RuntimeError(f"{path_or_name} not found: install Debian's {package} (make system-deps, as root)")
    return found


def database_url(admin_url: str, name: str) -> str:
    """Create database `name` on the server of `admin_url` (postgresql://...); its SQLAlchemy URL (psycopg2)."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.replace("postgresql://", "postgresql+psycopg2://").rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server the tests can stop and start again on the same port and data (AOF on)."""

    def __init__(self, workdir: Path, require=None):
        require = require or require_tool
        self.binary = require("redis-server", "redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
                                      "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None




@contextlib.contextmanager
def postgres_server(require=None):
    """initdb + pg_ctl start on a free port in a temporary directory (trust authentication, user postgres); yields
    postgresql://postgres@127.0.0.1:PORT/postgres; stopped and removed afterwards."""
    require = require or require_tool
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = require(found[-1] if found else "/usr/lib/postgresql/15/bin/initdb", "postgresql")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    base = tempfile.mkdtemp(prefix="fraud-pg-")  # short: the socket path must fit in 107 bytes
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the package's postgres user runs it
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")

    def run(*args, check=True):
        return subprocess.run([*as_user, *args], cwd=base, capture_output=True, text=True, timeout=120, check=check)

    data, port = os.path.join(base, "data"), free_port()
    try:
        run(initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        run(pg_ctl, "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-t", "60", "-o",
            f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as exc:
        log = Path(base, "server.log")
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}"
                           f"{log.read_text() if log.exists() else ''}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)
