"""The asynchronous front end shared by REST and gRPC: one asyncio event loop thread runs both servers
(aiohttp and grpc.aio), and model calls leave it for the batch scheduler or a thread pool.

Why: with a thread per request (the first version of this server: werkzeug's threaded WSGI server and grpcio's
synchronous server), most of a request's time was spent handing it between threads that all need Python's
global interpreter lock; the model call itself was the smaller part (bench/serving_bench.py, docs in
serving/README.md). On the event loop a request is parsed, validated and packed without any thread switch;
only the model call leaves the loop:
- batching on: the request joins its batch queue (serving.batching) and the loop is woken when the batch ran;
  wake-ups are coalesced, so one batch of 32 requests costs one wake-up, not 32;
- batching off: the call runs in the request thread pool (TensorFlow releases the lock while it computes).
Anything else that blocks (model status, config reloads) also runs in that pool.
"""
from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor


class Runner:
    """Runs prepared calls (serving.servable.Call) for coroutines on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, scheduler=None):
        self.loop = loop
        self.pool = pool
        self.scheduler = scheduler
        self._ready: collections.deque = collections.deque()
        self._wakeup_pending = False

    async def run(self, call) -> tuple[dict, float]:
        """The call's selected outputs and the model's runtime in microseconds."""
        if call.batch_key is not None:
            future = self.loop.create_future()
            self.scheduler.enqueue(call.batch_key, call.model_inputs, call.execute,
                                   callback=lambda task: self._deliver(future, task))
            task = await future
            if task.error is not None:
                raise task.error
            return call.select(task.outputs), task.runtime_us
        outputs, runtime_us = await self.loop.run_in_executor(self.pool, call.execute, call.model_inputs)
        return call.select(outputs), runtime_us

    async def blocking(self, fn, *args):
        """`fn(*args)` in the request thread pool (for work that may block: status, reloads)."""
        return await self.loop.run_in_executor(self.pool, fn, *args)

    # Called from batch threads: queue the result and wake the loop once for everything queued so far.
    def _deliver(self, future: asyncio.Future, task) -> None:
        self._ready.append((future, task))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._wakeup_pending = False
        ready = self._ready
        while ready:
            future, task = ready.popleft()
            if not future.done():  # the caller may have gone (cancelled RPC, closed connection)
                future.set_result(task)
