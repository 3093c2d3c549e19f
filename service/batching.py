"""Dynamic batching of inference requests on an asyncio queue.

Requests wait in a bounded queue; one worker task takes the first waiting request plus every request
already waiting (up to ``max_batch_size``) and runs them as one batch on one of ``streams`` dedicated
inference threads, so the event loop keeps answering. A lone request runs at once: the worker waits
(at most ``max_delay_s``) for more only while ``incoming()`` says requests are on their way (admitted
and being decoded). While every stream runs a batch, new requests queue up and form the next batch.
``max_batch_size = 1`` turns batching off (still bounded and off the loop).

With ``streams`` > 1, up to that many batches run at once on the one (thread-safe) session, like
several model instances in Triton's ``instance_group``: on a CPU a second batch fills the cores while
the first waits in the model's serial parts, so throughput rises when requests pile up; a lone request
still has the session to itself. :meth:`run_alone` runs a caller's whole job (e.g. decode + inference +
postprocess of a lone request) on an inference thread while nothing else is queued or running: one
thread hand-off instead of three. A full queue raises
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
    """Queue + batching worker around a blocking ``run_batch(list[In]) -> list[Out]``, called from at
    most ``streams`` threads at once.

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
        streams: int = 1,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or streams < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size, queue_size and streams must be >= 1 and max_delay_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self.streams = streams
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._incoming = incoming or (lambda: 0)
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._busy = 0  # batches and run_alone jobs on the inference threads
        self._wake = asyncio.Event()  # set when a batch or a run_alone job ends
        self._held: list[_Pending[In, Out]] = []  # the batch the worker holds while every stream is busy
        self._runs: set[asyncio.Task[None]] = set()

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs: a request now would have the session to itself."""
        return not self._busy and self.depth == 0 and self._queue is not None and not self._closing

    async def run_alone(self, job: Callable[[], T], timeout_s: float) -> T:
        """Run ``job`` on an inference thread now, at most ``timeout_s`` seconds; batches formed
        meanwhile take the other streams, or wait until it returns when there are none. Call it only
        when :attr:`idle` is true, with no ``await`` in between, so that no batch starts first.

        Raises :class:`BatcherClosedError` when closing, :class:`RequestTimeoutError` on timeout (the
        job still finishes in its thread and holds it until then), or what ``job`` raises.
        """
        if self._executor is None or self._closing:
            raise BatcherClosedError("the service is shutting down")
        if self._busy:
            raise RuntimeError("run_alone called while the session is busy")
        self._busy += 1
        loop = asyncio.get_running_loop()
        # One future the caller awaits, settled by the job or by the timer, whichever comes first: the
        # same as wait_for(shield(job)) with a third of its futures and callbacks on the event loop.
        answer: asyncio.Future[T] = loop.create_future()
        job_future = loop.run_in_executor(self._executor, job)

        def finished(done: asyncio.Future[T]) -> None:
            self._release()
            error = None if done.cancelled() else done.exception()  # retrieved even after a timeout
            if answer.done():
                return
            if done.cancelled():
                answer.cancel()
            elif error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())

        def expired() -> None:
            if not answer.done():
                answer.set_exception(RequestTimeoutError(f"no result within {timeout_s:g} s"))

        job_future.add_done_callback(finished)
        timer = loop.call_later(timeout_s, expired)
        try:
            return await answer
        finally:
            timer.cancel()

    async def start(self) -> None:
        """Create the queue and the worker task on the running loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="inference")
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
        """Stop taking requests, let queued and running ones finish (up to ``drain_timeout_s``), stop
        the worker; what is left then fails with :class:`BatcherClosedError`."""
        self._closing = True
        if self._queue is not None and self._worker is not None:
            deadline = time.monotonic() + drain_timeout_s
            while (self._queue.qsize() or self._held) and not self._worker.done():
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.01)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            if self._runs:
                await asyncio.wait(set(self._runs), timeout=max(0.0, deadline - time.monotonic()))
            left = self._held + [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            for pending in left:
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _collect(self, queue: asyncio.Queue[_Pending[In, Out]]) -> None:
        """Gather the next batch into ``_held`` (where :meth:`close` finds it if it stops the worker)."""
        self._held = [await queue.get()]
        deadline = time.perf_counter() + self.max_delay_s
        while len(self._held) < self.max_batch_size:
            try:
                self._held.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self._incoming() <= 0:
                break  # nothing on its way: do not make the batch wait
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                self._held.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break

    def _release(self) -> None:
        self._busy -= 1
        self._wake.set()

    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            await self._collect(self._queue)
            while self._busy >= self.streams:  # every stream is taken: gather more meanwhile
                self._wake.clear()
                await self._wake.wait()
                while len(self._held) < self.max_batch_size and not self._queue.empty():
                    self._held.append(self._queue.get_nowait())
            batch, self._held = self._held, []
            self._on_depth(self._queue.qsize())
            live = [p for p in batch if not p.future.done()]  # drop requests that timed out meanwhile
            if not live:
                continue
            self._busy += 1
            run = asyncio.create_task(self._run(live), name="inference-batch")
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    async def _run(self, live: list[_Pending[In, Out]]) -> None:
        """Run one batch on an inference thread and hand each request its output (or the error)."""
        assert self._executor is not None
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_batch, [p.item for p in live]
            )
            if len(outputs) != len(live):
                raise RuntimeError(f"run_batch returned {len(outputs)} outputs for {len(live)} inputs")
        except Exception as exc:
            logger.exception("batch of %d failed", len(live))
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._release()
        run_s = time.perf_counter() - started
        self._on_batch(len(live), run_s)
        for p, out in zip(live, outputs, strict=True):
            if not p.future.done():
                p.future.set_result(BatchResult(out, started - p.enqueued, run_s, len(live)))
