"""A bounded queue in front of the model, drained by one inference thread in micro-batches.

Requests wait on asyncio futures; one task takes whatever is waiting (up to `max_batch`) and runs
it in a single worker thread, so the event loop keeps parsing and answering HTTP while the model
runs. Nothing waits for a batch to fill: at low load every utterance runs alone, under load the
queue forms batches by itself. A request that times out or whose client leaves cancels its
future; the batcher skips cancelled ones and never writes to a finished future, so no state is
left half-updated. When a model call fails, each utterance of the batch is retried alone, so only
the utterance the model fails on gets the error, not its batch mates from other clients.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


# After this many model calls in a row that failed every utterance, /healthz reports "failing".
FAILING_AFTER = 3


class QueueFull(Exception):
    """More utterances are waiting than the queue admits; the client should retry later."""


class Batcher:
    def __init__(self, agent: Any, *, max_queue: int, max_batch: int, on_batch=None) -> None:
        self.agent = agent
        self.max_queue = max_queue
        # Utterances taken per trip to the inference thread. The agent decides how to run them:
        # one padded call, or one call each where answers would depend on batch mates
        # (EdgeAgent.batch_invariant); either way the thread hand-off is paid once per trip.
        self.max_batch = max_batch
        self._on_batch = on_batch
        # (text, the caller's context or None, future)
        self._waiting: collections.deque[tuple[str, Any, asyncio.Future]] = collections.deque()
        self._running = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-infer")
        self.consecutive_failures = 0  # model calls in a row with no utterance answered
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        """Utterances waiting or running."""
        return len(self._waiting) + self._running

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="edgeagent-batcher")

    def submit(self, texts: list[str], contexts: list[Any] | None = None) -> list[asyncio.Future]:
        """Queue utterances (each with its caller's context, or None); all or none.

        Raises:
            QueueFull: admitting them would exceed `max_queue`.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        if self.depth + len(texts) > self.max_queue:
            raise QueueFull(f"{self.depth} utterances are queued (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        self._waiting.extend(zip(texts, contexts or [None] * len(texts), futures))
        self._wakeup.set()
        return futures

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                batch: list[tuple[str, Any, asyncio.Future]] = []
                while self._waiting and len(batch) < self.max_batch:
                    item = self._waiting.popleft()
                    if not item[2].done():  # cancelled by a timeout or a client that left
                        batch.append(item)
                if not batch:
                    continue
                self._running = len(batch)
                try:
                    await self._run(loop, batch)
                finally:
                    self._running = 0

    async def _run(self, loop, batch: list[tuple[str, Any, asyncio.Future]]) -> None:
        """One model call for the batch; if it fails, one call per utterance, so each gets its own
        answer or its own error."""
        start = time.perf_counter()
        texts, contexts = [text for text, _, _ in batch], [context for _, context, _ in batch]
        call = functools.partial(self.agent.act_batch, texts, contexts) if any(c is not None for c in contexts) \
            else functools.partial(self.agent.act_batch, texts)
        try:
            calls = await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            if len(batch) == 1:
                self._failed(exc)
                if not batch[0][2].done():
                    batch[0][2].set_exception(exc)
                return
            for item in batch:
                if not item[2].done():
                    await self._run(loop, [item])
            return
        self.consecutive_failures = 0
        if self._on_batch is not None:
            self._on_batch(calls, time.perf_counter() - start)
        for (_, _, future), answer in zip(batch, calls):
            if not future.done():
                future.set_result(answer)

    def _failed(self, exc: Exception) -> None:
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        """Finish what is queued, then stop the task and the inference thread."""
        if self._task is None:
            return
        while self.depth and not self._task.done():
            await asyncio.sleep(0.005)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._executor.shutdown(wait=True)
