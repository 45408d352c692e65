"""Server-side batching, as TF Serving's `--enable_batching --batching_parameters_file=...` does it.

Concurrent requests for the same model, version, signature (and per-row input shapes) join one queue; a pool of
`num_batch_threads` threads, shared by every queue, merges the requests of a batch into one model call and
splits the outputs back. Semantics of TF Serving's BasicBatchScheduler / SharedBatchScheduler:

- a batch holds at most `max_batch_size` rows; a request that does not fit in the open batch closes it and
  opens the next one; a single request larger than `max_batch_size` is refused (INVALID_ARGUMENT);
- a batch is processed when it is full, or `batch_timeout_micros` after its first request arrived (0: as soon
  as a batch thread is free, so batches form only while the threads are busy: under load);
- at most `max_enqueued_batches` batches wait per queue: one more request answers UNAVAILABLE (HTTP 503)
  "The batch scheduling queue to which this task was submitted is full", instead of the queue growing without
  bound;
- `allowed_batch_sizes`: a batch is padded up to the next allowed size (by repeating its first row; the padded
  rows' outputs are dropped), so the model sees only a few shapes.

Requests are validated BEFORE they join a batch (serving.servable), so a malformed request is refused on its
own. Should a merged call still fail, each request of that batch is run again on its own: only the request
that causes the failure gets the error, never its neighbours.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from serving import errors
from serving.errors import ServingError

log = logging.getLogger("serving")

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchingOptions:
    """tensorflow.serving.BatchingParameters in plain Python, with TF Serving's defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2  # TF Serving: the machine's cores
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params) -> "BatchingOptions":
        import os

        def value(name, default):
            return getattr(params, name).value if params.HasField(name) else default

        return cls(max_batch_size=int(value("max_batch_size", cls.max_batch_size)),
                   batch_timeout_micros=int(value("batch_timeout_micros", cls.batch_timeout_micros)),
                   max_enqueued_batches=int(value("max_enqueued_batches", cls.max_enqueued_batches)),
                   num_batch_threads=int(value("num_batch_threads", os.cpu_count() or cls.num_batch_threads)),
                   allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
                   pad_variable_length_inputs=bool(params.pad_variable_length_inputs))

    def padded_size(self, rows: int) -> int:
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


@dataclass
class _Task:
    inputs: dict  # name -> array, first dimension = rows
    rows: int
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict | None = None
    runtime_us: float = 0.0
    error: BaseException | None = None
    callback: Callable[["_Task"], None] | None = None  # called (in the batch thread) when the task is done

    def finish(self) -> None:
        self.done.set()
        if self.callback is not None:
            self.callback(self)


@dataclass
class _Batch:
    queue: "_Queue"
    tasks: list = field(default_factory=list)
    rows: int = 0
    opened: float = field(default_factory=time.perf_counter)
    closed: bool = False


class _Queue:
    """The batches waiting for one (model, version, signature, row shapes)."""

    def __init__(self, key, run: Callable[[dict], tuple[dict, float]]):
        self.key, self.run = key, run
        self.batches: collections.deque[_Batch] = collections.deque()


@dataclass
class BatchStats:
    """What the batching layer did, for metrics: observed by the scheduler after every batch."""

    model_name: str
    batch_rows: int  # rows the model saw (with padding)
    queuing_us: list  # per task: time from enqueue to the batch's start


class BatchScheduler:
    """One shared pool of batch threads over many queues (TF Serving's SharedBatchScheduler)."""

    def __init__(self, options: BatchingOptions, observe: Callable[[BatchStats], None] | None = None):
        self.options = options
        self._observe = observe
        self._cond = threading.Condition()
        self._queues: dict = {}
        self._stopping = False
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------------------------------
    def submit(self, key, inputs: dict, run: Callable[[dict], tuple[dict, float]]) -> tuple[dict, float]:
        """Run `inputs` (validated, every array with the same first dimension) in a batch of queue `key`;
        `run(merged inputs) -> (outputs, runtime_us)` is the model call. Blocks until the batch ran."""
        task = self.enqueue(key, inputs, run)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs, task.runtime_us

    def enqueue(self, key, inputs: dict, run: Callable[[dict], tuple[dict, float]], callback=None) -> _Task:
        """`submit` without waiting: the returned task's `outputs`/`error` are set, and `callback(task)` is called
        from the batch thread, when its batch has run (for asynchronous front ends)."""
        rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
        if rows > self.options.max_batch_size:
            raise errors.invalid(f"Task size {rows} is larger than maximum input batch size "
                                 f"{self.options.max_batch_size}")
        task = _Task(inputs, rows, callback=callback)
        with self._cond:
            if self._stopping:
                raise ServingError(errors.UNAVAILABLE, "The server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, run)
            queue.run = run  # the same servable and signature: the newest callable is as good
            batch = queue.batches[-1] if queue.batches and not queue.batches[-1].closed else None
            if batch is not None and batch.rows + rows > self.options.max_batch_size:
                batch.closed = True  # it may run now: wake a batch thread, even if this request is refused below
                self._cond.notify()
                batch = None
            if batch is None:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(errors.UNAVAILABLE, QUEUE_FULL_MESSAGE)
                batch = _Batch(queue)
                queue.batches.append(batch)
            batch.tasks.append(task)
            batch.rows += rows
            if batch.rows >= self.options.max_batch_size:
                batch.closed = True
            self._cond.notify()
        return task

    def forget(self, predicate: Callable[[object], bool]) -> None:
        """Drop the idle queues whose key matches (a version was unloaded); busy ones drain first."""
        with self._cond:
            for key in [k for k, q in self._queues.items() if predicate(k) and not q.batches]:
                del self._queues[key]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(5)

    # ------------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[_Batch | None, float | None]:
        """The oldest batch that may run now (full, or timed out), or None with the time to wait."""
        now = time.perf_counter()
        timeout = self.options.batch_timeout_micros / 1e6
        best, wait = None, None
        for queue in self._queues.values():
            if not queue.batches:
                continue
            batch = queue.batches[0]
            due = batch.opened + timeout
            if batch.closed or due <= now:
                if best is None or batch.opened < best.opened:
                    best = batch
            else:
                wait = due - now if wait is None else min(wait, due - now)
        if best is not None:
            best.queue.batches.popleft()
            best.closed = True
        return best, wait

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping and not any(q.batches for q in self._queues.values()):
                        return
                    batch, wait = self._next_batch()
                    if batch is not None:
                        break
                    self._cond.wait(wait)
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        started = time.perf_counter()
        tasks = batch.tasks
        try:
            padded = self.options.padded_size(batch.rows)
            merged = merge_inputs([t.inputs for t in tasks], padded)
            outputs, runtime_us = batch.queue.run(merged)
            parts = split_outputs(outputs, [t.rows for t in tasks], padded)
        except BaseException as exc:  # noqa: BLE001 - answered below, request by request
            if len(tasks) == 1:
                tasks[0].error = exc
            else:  # never fail a neighbour: run each request on its own
                log.warning("a batch of %d requests failed (%s); running them one by one", len(tasks), exc)
                for task in tasks:
                    try:
                        task.outputs, task.runtime_us = batch.queue.run(task.inputs)
                    except BaseException as one:  # noqa: BLE001
                        task.error = one
            padded, parts = batch.rows, None
        else:
            for task, part in zip(tasks, parts):
                task.outputs, task.runtime_us = part, runtime_us
        if self._observe is not None:
            try:
                self._observe(BatchStats(str(batch.queue.key[0]) if isinstance(batch.queue.key, tuple) else "",
                                         padded,
                                         [(started - t.enqueued) * 1e6 for t in tasks]))
            except Exception:  # noqa: BLE001 - metrics never fail a request
                log.exception("batching metrics")
        for task in tasks:
            try:
                task.finish()
            except Exception:  # noqa: BLE001 - a front end's callback never stops the batch thread
                log.exception("batch task callback")


def merge_inputs(requests: list[dict], padded_rows: int) -> dict:
    """Concatenate the requests' arrays row-wise, then pad with copies of the first row up to `padded_rows`."""
    if len(requests) == 1 and padded_rows == next(iter(requests[0].values())).shape[0]:
        return requests[0]
    merged = {}
    for name in requests[0]:
        parts = [r[name] for r in requests]
        rows = sum(len(part) for part in parts)
        if padded_rows > rows:
            parts.append(np.repeat(parts[0][:1], padded_rows - rows, axis=0))
        merged[name] = np.concatenate(parts, axis=0)
    return merged


def split_outputs(outputs: dict, rows: list[int], padded_rows: int) -> list[dict]:
    """The merged outputs back per request (padding dropped); every output must be batched."""
    for name, array in outputs.items():
        if np.ndim(array) == 0 or array.shape[0] != padded_rows:
            raise ServingError(errors.INTERNAL, f"output {name!r} has shape {list(np.shape(array))}: batching needs "
                                                f"a first dimension of {padded_rows} (the batch)")
    parts, start = [], 0
    for n in rows:
        parts.append({name: array[start:start + n] for name, array in outputs.items()})
        start += n
    return parts
