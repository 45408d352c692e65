"""Console progress of a pipeline run: which component started when, and TF/Beam logs kept off the terminal."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time


class Progress(threading.Thread):
    """Prints each component as it starts, from the output folders TFX creates (no MLMD locking).

    A component's outputs land in <artifacts>/<component>/<output>/<execution id>/: a new execution folder
    means the component started in this run.
    """

    def __init__(self, artifacts_dir: str, component_ids, echo):
        super().__init__(daemon=True)
        self.artifacts_dir, self.component_ids, self.echo = artifacts_dir, list(component_ids), echo
        self.stop = threading.Event()
        self.before = self._execution_dirs()

    def _execution_dirs(self) -> set[str]:
        return {os.path.relpath(os.path.join(root, d), self.artifacts_dir)
                for root, dirs, _ in os.walk(self.artifacts_dir) for d in dirs
                if os.path.relpath(root, self.artifacts_dir).count(os.sep) == 1}

    def run(self):
        seen, started = set(), time.time()
        while not self.stop.wait(1.0):
            new = self._execution_dirs() - self.before
            for i, cid in enumerate(self.component_ids, 1):
                if cid not in seen and any(path.startswith(cid + os.sep) for path in new):
                    seen.add(cid)
                    self.echo(f"[{i}/{len(self.component_ids)}] {cid} started at +{time.time() - started:.0f}s")


@contextlib.contextmanager
def stderr_to(path, enabled: bool):
    """Send file descriptor 2 (TF/Beam C++ logs, Python logging, Beam worker processes) to a file, so the
    terminal shows progress and results; stdout (Keras epochs, component messages) stays visible."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
