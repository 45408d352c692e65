"""Versions on disk -> versions being served, as TF Serving's file-system source and manager do.

Each poll (every `poll_seconds`, like --file_system_poll_wait_seconds) lists `<base_path>/<digits>/` folders
that hold a `saved_model.pb` (TFX's Pusher copies that file last, so a half-copied version is not picked up),
chooses the versions to serve with the version policy, and for each new one: loads it, replays its warm-up
records, and only then swaps it in. Swapping replaces one dict reference, so a request sees either the old
set of versions or the new one, never a mix; requests in flight on an old version finish on it.

Like TF Serving's availability-preserving policy, a version is unloaded only when another chosen version is
available, and a version that fails to load (or to warm up) is reported in the model status (state END with
the error) and skipped, so the current one keeps serving. It is retried when its saved_model.pb changes.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving import errors
from serving.config import ModelSettings
from serving.metrics import LOAD_FAIL, LOAD_SUCCESS, ServingMetrics

log = logging.getLogger("serving")

_VERSION_DIR = re.compile(r"^[0-9]+$")

# ModelVersionStatus.State names
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass(frozen=True)
class VersionState:
    state: str
    error_code: str = errors.OK
    error_message: str = ""


def scan_versions(base_path: str) -> dict[int, tuple[str, tuple]]:
    """version -> (path, fingerprint of saved_model.pb) for every complete version folder."""
    found = {}
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return found
    for entry in entries:
        if not _VERSION_DIR.match(entry.name):
            continue
        pb = os.path.join(entry.path, "saved_model.pb")
        try:
            st = os.stat(pb)
        except OSError:
            continue
        found[int(entry.name)] = (entry.path, (st.st_mtime_ns, st.st_size))
    return found


class ModelManager:
    """The versions of one model."""

    def __init__(self, settings: ModelSettings, metrics: ServingMetrics, *, enable_warmup: bool = True,
                 scheduler=None):
        self.settings = settings
        self.metrics = metrics
        self.enable_warmup = enable_warmup
        self.scheduler = scheduler  # serving.batching.BatchScheduler (--enable_batching) or None
        self._serving: dict = {}  # version -> Servable; replaced, never mutated (readers take no lock)
        self._labels: dict[str, int] = {}  # replaced, never mutated
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, tuple] = {}  # version -> fingerprint that failed
        self._poll_lock = threading.Lock()
        self._warned_empty = False
        self._label_warned: set[tuple[str, int]] = set()

    @property
    def name(self) -> str:
        return self.settings.name

    # ------------------------------------------------------------------ request side (lock-free)
    def servable(self, version: int | None = None, label: str | None = None):
        serving = self._serving
        if label is not None:
            labels = self._labels
            if label not in labels:
                raise errors.invalid(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            if not serving:
                raise errors.not_found(f"Servable not found for request: Latest({self.name})")
            return serving[max(serving)]
        found = serving.get(version)
        if found is None:
            raise errors.not_found(f"Servable not found for request: Specific({self.name}, {version})")
        return found

    def status(self, version: int | None = None, label: str | None = None) -> list[tuple[int, VersionState]]:
        states = dict(self._states)
        if label is not None:
            labels = self._labels
            if label not in labels:
                raise errors.invalid(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is not None:
            if version not in states:
                raise errors.not_found(f"Could not find version {version} of model {self.name}")
            return [(version, states[version])]
        if not states:
            raise errors.not_found(f"Could not find any versions of model {self.name}")
        return sorted(states.items(), reverse=True)

    def available_versions(self) -> list[int]:
        return sorted(self._serving)

    def labels(self) -> dict[str, int]:
        return dict(self._labels)

    # ------------------------------------------------------------------ poll side
    def update_settings(self, settings: ModelSettings) -> None:
        self.settings = settings

    def poll(self) -> None:
        """One pass of the file-system source + manager. Safe to call from one thread at a time."""
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        settings = self.settings
        on_disk = scan_versions(settings.base_path)
        if not on_disk and not self._serving and not self._warned_empty:
            log.warning("No versions of servable %s found under base path %s. Did you forget to name your leaf "
                        "directory as a number (eg. '/1/')?", self.name, settings.base_path)
            self._warned_empty = True
        for version, fingerprint in list(self._failed.items()):
            if version not in on_disk or on_disk[version][1] != fingerprint:
                del self._failed[version]  # rewritten or removed: worth another try
        for version in [v for v, s in self._states.items()
                        if s.state == END and v not in on_disk and v not in self._serving]:
            del self._states[version]  # deleted from disk after it was unloaded: forget it (bounded memory)
        candidates = [v for v in on_disk if v not in self._failed]
        chosen = settings.policy.choose(candidates)
        for version in sorted(chosen, reverse=True):  # newest first: it is the one clients get by default
            if version not in self._serving:
                self._load(version, *on_disk[version])
        chosen_available = [v for v in chosen if v in self._serving]
        if chosen_available:
            for version in [v for v in self._serving if v not in chosen]:
                self._unload(version)
        self._apply_labels(settings.labels)
        self.metrics.set_versions(self.name, {v: s.state == AVAILABLE for v, s in self._states.items()
                                              if s.state in (AVAILABLE, LOADING) or s.error_code != errors.OK})

    def _load(self, version: int, path: str, fingerprint: tuple) -> None:
        from serving import warmup
        from serving.servable import Servable

        ident = f"{{name: {self.name} version: {version}}}"
        self._states[version] = VersionState(LOADING)
        log.info("Loading servable version %s from %s", ident, path)
        started = time.perf_counter()
        try:
            servable = Servable.load(self.name, version, path, scheduler=self.scheduler)
        except Exception as exc:  # any failure to load is the version's problem, never the server's
            self.metrics.load_attempt_count.inc(model_path=path, status=LOAD_FAIL)
            self._fail(version, fingerprint, errors.UNKNOWN, f"Loading servable {ident} failed: {exc}")
            return
        self.metrics.load_attempt_count.inc(model_path=path, status=LOAD_SUCCESS)
        self.metrics.load_latency.inc((time.perf_counter() - started) * 1e6, model_path=path)
        if self.enable_warmup:
            try:
                logs = warmup.read_warmup_logs(path)
                if logs:
                    latency = warmup.replay(servable, logs)
                    self.metrics.model_warmup_latency.observe(latency, model_path=path, status=errors.OK)
                    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
                             "Elapsed time (microseconds): %d.", path, len(logs), latency)
            except Exception as exc:
                message = getattr(exc, "message", None) or str(exc)
                self.metrics.model_warmup_latency.observe(0, model_path=path, status=errors.INVALID_ARGUMENT)
                self._fail(version, fingerprint, errors.INVALID_ARGUMENT,
                           f"Warm-up of servable {ident} failed: {message}")
                return
        self._serving = {**self._serving, version: servable}  # the swap: one reference assignment
        self._states[version] = VersionState(AVAILABLE)
        log.info("Successfully loaded servable version %s", ident)

    def _fail(self, version: int, fingerprint: tuple, code: str, message: str) -> None:
        self._failed[version] = fingerprint
        self._states[version] = VersionState(END, code, message)
        current = self.available_versions()
        log.error("%s; %s", message,
                  f"still serving version(s) {current}" if current else "no version of this model is available")

    def _unload(self, version: int) -> None:
        self._states[version] = VersionState(UNLOADING)
        serving = dict(self._serving)
        gone = serving.pop(version, None)
        self._serving = serving
        if gone is not None:  # requests already queued still hold the servable and finish on it
            gone.forget_batches()
        self._states[version] = VersionState(END)
        log.info("Unloaded servable version {name: %s version: %s}", self.name, version)

    def _apply_labels(self, wanted: dict) -> None:
        """A label may only point at an available version (TF Serving refuses the config otherwise);
        a label whose version is not (yet) available is reported and left as it was."""
        labels = {}
        for label, version in wanted.items():
            if version in self._serving:
                labels[label] = version
            else:
                previous = self._labels.get(label)
                if previous is not None and previous in self._serving:
                    labels[label] = previous
                if (label, version) not in self._label_warned:  # once per (label, version), not every poll
                    log.error("Request to assign label %s to version %s of model %s, which is not currently "
                              "available for inference", label, version, self.name)
                    self._label_warned.add((label, version))
        self._labels = labels

    def unload_all(self) -> None:
        for version in list(self._serving):
            self._unload(version)


class ServerCore:
    """All models of a server, looked up by name; what the REST and gRPC front-ends call."""

    def __init__(self, models: list[ModelSettings], metrics: ServingMetrics, *, enable_warmup: bool = True,
                 scheduler=None):
        self.metrics = metrics
        self.enable_warmup = enable_warmup
        self.scheduler = scheduler
        self._managers: dict[str, ModelManager] = {}
        self._config_lock = threading.Lock()
        self.apply(models)

    def apply(self, models: list[ModelSettings]) -> None:
        """Apply a (re)loaded model config: new models are added, removed ones unloaded, changed ones updated."""
        with self._config_lock:
            managers = dict(self._managers)
            wanted = {m.name: m for m in models}
            for name in [n for n in managers if n not in wanted]:
                managers.pop(name).unload_all()
                log.info("Model %s removed from the config: unloaded", name)
            for name, settings in wanted.items():
                current = managers.get(name)
                if current is None or Path(current.settings.base_path) != Path(settings.base_path):
                    if current is not None:
                        current.unload_all()
                    managers[name] = ModelManager(settings, self.metrics, enable_warmup=self.enable_warmup,
                                                  scheduler=self.scheduler)
                else:
                    current.update_settings(settings)
            self._managers = managers

    def poll(self) -> None:
        for manager in list(self._managers.values()):
            try:
                manager.poll()
            except Exception:  # a poll must never kill the poller thread
                log.exception("Polling model %s failed", manager.name)

    def manager(self, model_name: str) -> ModelManager:
        found = self._managers.get(model_name)
        if found is None:
            raise errors.not_found(f"Servable not found for request: Latest({model_name})")
        return found

    def servable(self, model_name: str, version: int | None = None, label: str | None = None):
        if version is not None and label is not None:
            raise errors.invalid(f"Both model version ({version}) and model version label ({label}) cannot be "
                                 "supplied.")
        return self.manager(model_name).servable(version, label)

    def status(self, model_name: str, version: int | None = None, label: str | None = None):
        if version is not None and label is not None:
            raise errors.invalid(f"Both model version ({version}) and model version label ({label}) cannot be "
                                 "supplied.")
        manager = self._managers.get(model_name)
        if manager is None:
            if version is not None:
                raise errors.not_found(f"Could not find version {version} of model {model_name}")
            raise errors.not_found(f"Could not find any versions of model {model_name}")
        return manager.status(version, label)

    def model_names(self) -> list[str]:
        return sorted(self._managers)

    def knows(self, model_name: str) -> bool:
        """Whether the model is configured on this server (its name is a bounded metric label value)."""
        return model_name in self._managers

    def wait_until_available(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(m.available_versions() for m in self._managers.values()):
                return True
            time.sleep(0.05)
        return False
