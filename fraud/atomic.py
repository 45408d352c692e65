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


STAGING_SUFFIX = ".tmp"  # a folder being published: `.<name>.<random>.tmp`, never a numeric version name


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_tree(source: str | Path, target: str | Path, *, copy_file=shutil.copy2) -> Path:
    """Copy the folder `source` to `target` so that `target` appears complete or not at all: the copy goes to a
    hidden staging folder next to it (a name no model server takes for a version), every file and folder is
    fsynced, then one rename puts it in place and the parent is fsynced. Any failure (a full disk, a crash)
    leaves no `target`; an exception also removes the staging folder. `target` must not exist.
    `copy_file(src, dst)` is the per-file copy (tests inject failures through it)."""
    source, target = Path(source), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    with atomic_path(target, directory=True) as staging:
        for folder, _, files in os.walk(source):
            relative = Path(folder).relative_to(source)
            (staging / relative).mkdir(exist_ok=True)
            for name in sorted(files):
                copy_file(Path(folder) / name, staging / relative / name)
                _fsync_path(staging / relative / name)
        for folder, _, _ in os.walk(staging, topdown=False):
            _fsync_path(Path(folder), directory=True)
    _fsync_path(target.parent, directory=True)
    return target


def remove_stale_staging(parent: str | Path, *, older_than_s: float) -> list[Path]:
    """Remove staging folders of publishes that died (a killed process cannot clean up) older than the age."""
    import time

    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if path.name.startswith(".") and path.name.endswith(STAGING_SUFFIX) and path.is_dir():
            if time.time() - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
