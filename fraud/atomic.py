"""Write files so that a crash never leaves a half-written one: write a temporary file in the same folder,
fsync it, then rename it over the target (atomic on POSIX file systems)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _default_mode(base: int) -> int:
    """The permissions a plain open() would give (mkstemp/mkdtemp make files private)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_path(target: str | Path, *, directory: bool = False):
    """Yield a temporary path next to `target`; on success it replaces `target`, on failure it is removed.
    The result gets the permissions a plain open()/mkdir would give (the umask's), not mkstemp's private ones.

    For writers that want a path (pandas, SQLite). `directory=True` yields an empty temporary folder
    instead, renamed to `target` at the end (`target` must not exist, or be an empty folder).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{target.name}.", ".tmp"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
        os.chmod(tmp, _default_mode(0o777))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, _default_mode(0o666))
    try:
        yield tmp
        if directory:
            if target.is_dir():
                target.rmdir()  # empty: rename cannot replace a directory portably
            os.rename(tmp, target)
        else:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(target)


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)
