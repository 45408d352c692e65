"""Copy the files one installed distribution put into a venv (its RECORD, plus the .pyc compiled for them) to the
same paths under DEST: the Dockerfile's final stage adds them on top of the dependencies' layer, so changing the
project's code rebuilds a layer of a few hundred kB instead of the whole venv.

    python copy_installed.py DISTRIBUTION DEST
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys


def main(distribution: str, dest: str) -> int:
    dist = importlib.metadata.distribution(distribution)
    count = 0
    for entry in dist.files or ():
        src = os.path.normpath(str(dist.locate_file(entry)))
        paths = [src]
        if src.endswith(".py"):
            paths.append(importlib.util.cache_from_source(src))
        for path in paths:
            if os.path.isfile(path):
                target = dest + path
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
                count += 1
    print(f"copy_installed: {count} files of {distribution} under {dest}")
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
