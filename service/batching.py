"""Dynamic batching of inference requests on an asyncio queue.

Requests wait in a bounded queue; one worker task takes the first waiting request plus every request
already waiting (up to ``max_batch_size``) and runs them as one batch in a dedicated worker thread, so
the event loop keeps answering. A lone request runs at once: the worker waits (at most
``max_delay_s``) for more only while ``incoming()`` says requests are on their way (admitted and
being decoded). While a batch runs, new requests queue up and form the next batch.
``max_batch_size = 1`` turns batching off (still bounded and off the loop). :meth:`run_alone` runs
a caller's whole job (e.g. decode + inference + postprocess of a lone request) on the inference
thread while nothing else is queued or running: one thread hand-off instead of three. A full queue raises
:class:`QueueFullError` (the app answers 503 + ``Retry-After``); a request that waits longer than
its timeout raises :class:`RequestTimeoutError` and is skipped if it has not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")


class QueueFullError(Exception):
    """The queue holds ``queue_size`` requests already."""


class RequestTimeoutError(Exception):
    """The request did not finish within its timeout."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no new requests."""


@dataclass
class BatchResult(Generic[Out]):
    """One request's output with its queue wait and the batch's run time (seconds) and size."""

    output: Out
    queue_s: float
    run_s: float
    batch_size: int


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[BatchResult[Out]]
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher(Generic[In, Out]):
    """Queue + batching worker around a blocking ``run_batch(list[In]) -> list[Out]``.

    ``on_batch(size, seconds)`` and ``on_depth(depth)`` are observability hooks (metrics);
    ``incoming()`` counts requests that will be submitted soon (default: none known).
    """

    def __init__(
        self,
        run_batch: Callable[[list[In]], list[Out]],
        max_batch_size: int,
        max_delay_s: float,
        queue_size: int,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        incoming: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and queue_size must be >= 1 and max_delay_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._incoming = incoming or (lambda: 0)
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._running = False  # a batch or a run_alone job is on the inference thread
        self._wake = asyncio.Event()  # set when a run_alone job ends

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs: a request now would have the inference thread to itself."""
        return not self._running and self.depth == 0 and self._queue is not None and not self._closing

    async def run_alone(self, job: Callable[[], T], timeout_s: float) -> T:
        """Run ``job`` on the inference thread now, at most ``timeout_s`` seconds; batches formed
        meanwhile wait until it returns. Call it only when :attr:`idle` is true, with no ``await`` in
        between, so that no batch starts first.

        Raises :class:`BatcherClosedError` when closing, :class:`RequestTimeoutError` on timeout (the
        job still finishes in its thread and holds it until then), or what ``job`` raises.
        """
        if self._executor is None or self._closing:
            raise BatcherClosedError("the service is shutting down")
        if self._running:
            raise RuntimeError("run_alone called while the inference thread is busy")
        self._running = True
        future = asyncio.get_running_loop().run_in_executor(self._executor, job)

        def release(_: object) -> None:
            self._running = False
            self._wake.set()

        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise RequestTimeoutError(f"no result within {timeout_s:g} s") from None

    async def start(self) -> None:
        """Create the queue and the worker task on the running loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker = asyncio.create_task(self._loop(), name="dynamic-batcher")

    async def submit(self, item: In, timeout_s: float) -> BatchResult[Out]:
        """Queue ``item`` and wait for its output, at most ``timeout_s`` seconds in all."""
        if self._queue is None or self._closing:
            raise BatcherClosedError("the service is shutting down")
        future: asyncio.Future[BatchResult[Out]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(item, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.queue_size} requests are already waiting") from None
        self._on_depth(self._queue.qsize())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            future.cancel()  # the worker skips it if it has not started
            raise RequestTimeoutError(f"no result within {timeout_s:g} s") from None

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Stop taking requests, let queued ones finish (up to ``drain_timeout_s``), stop the worker."""
        self._closing = True
        if self._queue is not None and self._worker is not None:
            deadline = time.monotonic() + drain_timeout_s
            while self._queue.qsize() and time.monotonic() < deadline and not self._worker.done():
                await asyncio.sleep(0.01)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _collect(self, queue: asyncio.Queue[_Pending[In, Out]]) -> list[_Pending[In, Out]]:
        first = await queue.get()
        batch = [first]
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self._incoming() <= 0:
                break  # nothing on its way: do not make the batch wait
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        assert self._queue is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(self._queue)
            while self._running:  # a run_alone job holds the inference thread: gather more meanwhile
                self._wake.clear()
                await self._wake.wait()
                while len(batch) < self.max_batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            self._on_depth(self._queue.qsize())
            live = [p for p in batch if not p.future.done()]  # drop requests that timed out meanwhile
            if not live:
                continue
            started = time.perf_counter()
            self._running = True
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in live])
                if len(outputs) != len(live):
                    raise RuntimeError(f"run_batch returned {len(outputs)} outputs for {len(live)} inputs")
            except Exception as exc:
                logger.exception("batch of %d failed", len(live))
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._running = False
            run_s = time.perf_counter() - started
            self._on_batch(len(live), run_s)
            for p, out in zip(live, outputs, strict=True):
                if not p.future.done():
                    p.future.set_result(BatchResult(out, started - p.enqueued, run_s, len(live)))
